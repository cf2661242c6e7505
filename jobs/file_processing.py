"""Task type `file_processing`: summarise one CSV, JSON or text file and write a JSON report.

The input is a path inside FILES_DIR or an `s3://bucket/key` URI; the report goes
to OUTPUT_DIR (default) or an S3 URI. Files are streamed in chunks where the
operation allows it; `json_summary` parses the whole document, bounded by
file_storage.MAX_INPUT_BYTES.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

from core.errors import TaskInputError
from core.registry import task
from core.settings import get_settings
from jobs import file_storage

Operation = Literal["stats", "csv_to_json", "column_stats", "json_summary"]
Format = Literal["csv", "json", "text", "auto"]

DEFAULT_OPERATIONS: tuple[Operation, ...] = ("stats",)

FORMAT_BY_SUFFIX = {".csv": "csv", ".json": "json", ".jsonl": "json"}
NEEDED_FORMAT = {"csv_to_json": "csv", "column_stats": "csv", "json_summary": "json"}
"""Operations that only make sense for one format; `stats` fits every format."""
SAMPLE_ROWS = 5
"""How many converted rows the task result carries; the report file holds them all."""
DISTINCT_CAP = 10_000
"""Most distinct values counted per text column, bounding memory on wide or unique columns."""
LISTED_KEYS = 100
"""Most top-level keys a json_summary lists."""


class FileParams(BaseModel):
    """Parameters of a file_processing task; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)  # built by its first use

    path: str = Field(min_length=1, description="Path relative to FILES_DIR, or s3://bucket/key.")
    format: Format = "auto"
    operations: list[Operation] = Field(default_factory=lambda: list(DEFAULT_OPERATIONS), min_length=1)
    output: str | None = Field(default=None, description="Path under OUTPUT_DIR, or s3://bucket/prefix/.")


@task("file_processing", max_retries=3, timeout_s=600, params_model=FileParams)
def process(params: FileParams) -> dict[str, Any]:
    """Run the requested operations over one file and write a JSON report of their results."""
    settings = get_settings()
    fmt = detect_format(params.path) if params.format == "auto" else params.format
    operations = list(dict.fromkeys(params.operations))
    for operation in operations:
        needed = NEEDED_FORMAT.get(operation)
        if needed and needed != fmt:
            raise TaskInputError(
                f"operation {operation!r} needs a {needed} file, but {params.path!r} is read as {fmt}; "
                "set 'format' if the extension is misleading"
            )
    json_lines = PurePosixPath(params.path).suffix.lower() == ".jsonl"
    target = file_storage.output_target(params.output, PurePosixPath(params.path).stem, settings)

    results: dict[str, Any] = {}
    with file_storage.local_file(params.path, settings) as path, file_storage.report_sink(target, settings) as report:
        head = {"source": params.path, "format": fmt, "operations": operations}
        # The results object is streamed, so open it by hand inside the head object.
        report.write(json.dumps(head)[:-1] + ', "results": {')
        for index, operation in enumerate(operations):
            report.write(("," if index else "") + f"\n{json.dumps(operation)}: ")
            if operation == "csv_to_json":
                results[operation] = csv_to_json(path, report)
                continue
            if operation == "stats":
                results[operation] = text_stats(path)
            elif operation == "column_stats":
                results[operation] = column_stats(path)
            else:
                results[operation] = json_summary(path, json_lines)
            report.write(json.dumps(results[operation], ensure_ascii=False))
        report.write("\n}}\n")
    return {"processed": True, "source": params.path, "format": fmt, "output": target, "results": results}


def detect_format(path: str) -> str:
    """Guess csv, json or text from the file extension."""
    return FORMAT_BY_SUFFIX.get(PurePosixPath(path).suffix.lower(), "text")


def text_stats(path: Path) -> dict[str, Any]:
    """Count bytes, lines and ASCII-whitespace-separated words, and hash the file with SHA-256.

    Lines are newline characters, plus one for a non-empty last line without one.
    """
    digest = hashlib.sha256()
    size = lines = words = 0
    in_word = False
    last_byte = b""
    with path.open("rb") as handle:
        while chunk := handle.read(file_storage.CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
            words += len(chunk.split())
            # A word cut by the chunk boundary was counted once in each chunk.
            if in_word and not chunk[:1].isspace():
                words -= 1
            in_word = not chunk[-1:].isspace()
            last_byte = chunk[-1:]
    if size and last_byte != b"\n":
        lines += 1
    return {"bytes": size, "lines": lines, "words": words, "sha256": digest.hexdigest()}


def csv_to_json(path: Path, report: TextIO) -> dict[str, Any]:
    """Stream every CSV row into `report` as an object; return the row count and a short sample.

    Writes `{"columns": [...], "rows": [...], "row_count": n}`. Short rows get null
    for their missing columns.
    """
    header, rows = _csv_table(path)
    if len(set(header)) != len(header):
        repeated = sorted({name for name in header if header.count(name) > 1})
        raise TaskInputError(f"CSV header repeats column(s) {repeated}; csv_to_json needs unique names")
    report.write('{"columns": ' + json.dumps(header, ensure_ascii=False) + ', "rows": [')
    sample: list[dict[str, str | None]] = []
    count = 0
    for row in rows:
        record = dict(zip(header, row, strict=True))
        report.write(("," if count else "") + "\n" + json.dumps(record, ensure_ascii=False))
        count += 1
        if len(sample) < SAMPLE_ROWS:
            sample.append(record)
    report.write(f'\n], "row_count": {count}}}')
    return {"columns": header, "row_count": count, "sample": sample}


def column_stats(path: Path) -> dict[str, Any]:
    """Summarise each CSV column: counts, and min/max/mean/sum if numeric, else distinct values."""
    header, rows = _csv_table(path)
    tallies = [_ColumnTally() for _ in header]
    count = 0
    for row in rows:
        count += 1
        for tally, value in zip(tallies, row, strict=True):
            tally.add(value)
    columns = [{"name": name, **tally.summary()} for name, tally in zip(header, tallies, strict=True)]
    return {"row_count": count, "columns": columns}


def json_summary(path: Path, json_lines: bool) -> dict[str, Any]:
    """Describe a JSON document's top level, or each record's type for JSON Lines."""
    if json_lines:
        return _json_lines_summary(path)
    try:
        with path.open(encoding="utf-8-sig") as handle:
            document = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TaskInputError(f"not valid UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise TaskInputError("JSON is nested too deeply to parse") from None
    summary: dict[str, Any] = {"type": _json_type(document)}
    if isinstance(document, dict):
        keys = list(document)
        summary.update(length=len(keys), keys=keys[:LISTED_KEYS], keys_truncated=len(keys) > LISTED_KEYS)
    elif isinstance(document, list):
        summary.update(length=len(document), item_types=_type_counts(document))
    elif isinstance(document, str):
        summary.update(length=len(document))
    return summary


def _json_lines_summary(path: Path) -> dict[str, Any]:
    item_types: Counter[str] = Counter()
    line_number = 0
    try:
        with path.open(encoding="utf-8-sig") as handle:
            for line in handle:
                line_number += 1
                if line.strip():
                    item_types[_json_type(json.loads(line))] += 1
    except (json.JSONDecodeError, RecursionError) as exc:
        raise TaskInputError(f"not valid JSON Lines at line {line_number}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise TaskInputError(f"not UTF-8 text: {exc}") from None
    return {"type": "json_lines", "length": item_types.total(), "item_types": dict(item_types)}


def _csv_table(path: Path) -> tuple[list[str], Iterator[list[str | None]]]:
    """Return the CSV header and an iterator over its rows, padded with None to the header's width."""
    records = _csv_records(path)
    header = next(records, [])

    def padded() -> Iterator[list[str | None]]:
        for number, row in enumerate(records, start=1):
            if len(row) > len(header):
                raise TaskInputError(f"CSV data row {number} has {len(row)} fields; the header has {len(header)}")
            yield [*row, *[None] * (len(header) - len(row))]

    return header, padded()


def _csv_records(path: Path) -> Iterator[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                if row:
                    yield row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TaskInputError(f"cannot parse CSV near line {reader.line_num + 1}: {exc}") from None


@dataclass
class _ColumnTally:
    count: int = 0
    non_empty: int = 0
    numeric: int = 0
    total: float = 0
    minimum: float = math.inf
    maximum: float = -math.inf
    values: Counter[str] = field(default_factory=Counter)
    distinct_capped: bool = False

    def add(self, raw: str | None) -> None:
        if raw is None:
            return
        self.count += 1
        value = raw.strip()
        if not value:
            return
        self.non_empty += 1
        number = _as_number(value)
        if number is not None:
            self.numeric += 1
            self.total += number
            self.minimum = min(self.minimum, number)
            self.maximum = max(self.maximum, number)
        if value in self.values or len(self.values) < DISTINCT_CAP:
            self.values[value] += 1
        else:
            self.distinct_capped = True

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"count": self.count, "non_empty": self.non_empty, "numeric": self.numeric}
        if self.non_empty and self.numeric == self.non_empty:
            summary.update(
                type="numeric", min=self.minimum, max=self.maximum, mean=self.total / self.numeric, sum=self.total
            )
            return summary
        top = self.values.most_common(1)
        summary.update(
            type="text",
            distinct=len(self.values),
            distinct_capped=self.distinct_capped,
            top=top[0][0] if top else None,
            top_count=top[0][1] if top else 0,
        )
        return summary


def _as_number(value: str) -> int | float | None:
    # int() and float() accept "1_000", "nan" and "inf"; none of those is a CSV number.
    if "_" in value:
        return None
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


def _type_counts(items: list[Any]) -> dict[str, int]:
    return dict(Counter(_json_type(item) for item in items))
