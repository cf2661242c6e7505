"""Where file_processing reads its input and writes its report: FILES_DIR, OUTPUT_DIR or S3.

Local paths are confined to their directory after resolving symlinks. boto3 is
imported only when an `s3://` URI is used, so local-only workers never load it.
Missing S3 buckets and keys become TaskInputError; every other botocore error
propagates, so the task is retried.
"""

from __future__ import annotations

import io
import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, TextIO

from core.errors import TaskInputError
from core.settings import Settings

MAX_INPUT_BYTES = 100 * 1024 * 1024
"""Largest input file accepted, in bytes."""
CHUNK_BYTES = 1024 * 1024
"""How much of a file is read or downloaded at a time, in bytes."""
S3_SCHEME = "s3://"
MISSING_S3_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404"})


def is_s3_uri(value: str) -> bool:
    """Tell whether `value` names an S3 object or prefix rather than a local path."""
    return value.startswith(S3_SCHEME)


def split_s3_uri(uri: str, settings: Settings | None = None) -> tuple[str, str]:
    """Split `s3://bucket/key` into bucket and key (the key may be empty); with `settings`, refuse a bucket
    outside S3_BUCKETS when that is set."""
    bucket, _, key = uri.removeprefix(S3_SCHEME).partition("/")
    if not bucket:
        raise TaskInputError(f"{uri!r} names no bucket; expected s3://bucket/key")
    if settings is not None and settings.s3_buckets and bucket not in settings.s3_buckets:
        allowed = ", ".join(settings.s3_buckets)
        raise TaskInputError(f"bucket {bucket!r} is not one this deployment may use (S3_BUCKETS: {allowed})")
    return bucket, key


def file_name(value: str) -> str:
    """Return the last component of a local path or S3 URI."""
    return PurePosixPath(value.removeprefix(S3_SCHEME)).name


def confine(base: Path, value: str, label: str) -> Path:
    """Resolve `value` against `base`, refusing any result (symlinks followed) outside `base`.

    `label` names the directory in the error, e.g. "FILES_DIR".
    """
    root = base.resolve()
    try:
        resolved = (root / value).resolve()
    except (OSError, ValueError) as exc:
        raise TaskInputError(f"bad path {value!r}: {exc}") from None
    if not resolved.is_relative_to(root):
        raise TaskInputError(f"path escapes {label}: {value!r}")
    return resolved


@contextmanager
def local_file(source: str, settings: Settings) -> Iterator[Path]:
    """Yield a local, size-checked file holding `source`; S3 objects are downloaded to a temp file."""
    if is_s3_uri(source):
        with _download(source, settings) as path:
            yield path
        return
    path = confine(settings.files_dir, source, "FILES_DIR")
    if not path.exists():
        raise TaskInputError(f"file not found in FILES_DIR: {source!r}")
    if not path.is_file():
        raise TaskInputError(f"not a regular file: {source!r}")
    _check_size(source, path.stat().st_size)
    yield path


def output_target(output: str | None, stem: str, settings: Settings) -> str:
    """Return where the report goes: an absolute local path inside OUTPUT_DIR or a full S3 URI.

    With no `output`, or one ending in "/" (or naming an existing directory), the
    report gets a generated name `<stem>.<UTC timestamp>-<short uuid>.json`.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    generated = f"{stem or 'output'}.{stamp}-{uuid.uuid4().hex[:8]}.json"
    if output and is_s3_uri(output):
        bucket, key = split_s3_uri(output, settings)
        if not key or key.endswith("/"):
            key += generated
        return f"{S3_SCHEME}{bucket}/{key}"
    target = confine(settings.output_dir, output or "", "OUTPUT_DIR")
    if not output or output.endswith("/") or target.is_dir():
        target = confine(settings.output_dir, str(target / generated), "OUTPUT_DIR")
    return str(target)


@contextmanager
def report_sink(target: str, settings: Settings) -> Iterator[TextIO]:
    """Yield a text handle for the report; publish it at `target` only if the block succeeds.

    A failed task therefore never leaves a half-written report behind.
    """
    if is_s3_uri(target):
        bucket, key = split_s3_uri(target, settings)
        with io.TextIOWrapper(tempfile.TemporaryFile(), encoding="utf-8") as spool:
            yield spool
            spool.flush()
            spool.buffer.seek(0)
            with _missing_is_input_error(target):
                _s3_client(settings).put_object(
                    Bucket=bucket, Key=key, Body=spool.buffer, ContentType="application/json"
                )
        return
    final = Path(target)
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        with partial.open("x", encoding="utf-8") as handle:
            yield handle
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


def _check_size(source: str, size: int) -> None:
    if size > MAX_INPUT_BYTES:
        raise TaskInputError(f"{source!r} is {size} bytes; the limit is {MAX_INPUT_BYTES} bytes")


@contextmanager
def _download(uri: str, settings: Settings) -> Iterator[Path]:
    bucket, key = split_s3_uri(uri, settings)
    if not key or key.endswith("/"):
        raise TaskInputError(f"{uri!r} names no object; expected s3://bucket/key")
    with _missing_is_input_error(uri):
        response = _s3_client(settings).get_object(Bucket=bucket, Key=key)
    body = response["Body"]
    with body, tempfile.TemporaryDirectory(prefix="taskrelay-s3-") as scratch:
        _check_size(uri, response.get("ContentLength", 0))
        path = Path(scratch) / (file_name(key) or "object")
        received = 0
        with path.open("wb") as copy:
            for chunk in body.iter_chunks(CHUNK_BYTES):
                received += len(chunk)
                # ContentLength is only a claim; count what actually arrives.
                _check_size(uri, received)
                copy.write(chunk)
        yield path


@contextmanager
def _missing_is_input_error(uri: str) -> Iterator[None]:
    from botocore.exceptions import ClientError

    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in MISSING_S3_CODES:
            raise TaskInputError(f"S3 object or bucket not found: {uri!r} ({code})") from None
        raise


def _s3_client(settings: Settings) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=settings.s3_endpoint_url or None)
