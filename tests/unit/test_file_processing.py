"""Unit tests of the file_processing task against real files in tmp_path and moto's fake S3."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core import registry
from core.errors import TaskInputError
from core.settings import Settings
from jobs import file_processing, file_storage
from jobs.file_processing import FileParams, process

CSV_TEXT = "name,age,city\nada,36,London\nalan,41,Wilmslow\ngrace,85,\nlinus,27,London\nken,80,London\nbarbara,\n"


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point FILES_DIR and OUTPUT_DIR at fresh directories under tmp_path."""
    (tmp_path / "files").mkdir()
    configured = Settings.from_env({"FILES_DIR": str(tmp_path / "files"), "OUTPUT_DIR": str(tmp_path / "output")})
    monkeypatch.setattr("jobs.file_processing.get_settings", lambda: configured)
    return configured


def put_file(settings: Settings, name: str, content: str | bytes) -> Path:
    """Write `content` to `name` under FILES_DIR and return its path."""
    path = settings.files_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def run(**parameters: Any) -> dict[str, Any]:
    """Validate `parameters` the way the worker does, run the task, and check the result is JSON."""
    result = process(registry.get("file_processing").parse_params(parameters))
    json.dumps(result)
    return result


def read_report(result: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(result["output"]).read_text(encoding="utf-8"))


def test_registered_with_its_retry_policy_and_model() -> None:
    task_type = registry.get("file_processing")
    assert (task_type.func, task_type.max_retries, task_type.timeout_s) == (process, 3, 600)
    assert task_type.params_model is FileParams


def test_parameters_default_and_ignore_unknown_keys() -> None:
    params = registry.get("file_processing").parse_params({"path": "a.txt", "colour": "blue"})
    assert params == FileParams(path="a.txt", format="auto", operations=["stats"], output=None)


def test_unknown_operation_is_refused_listing_allowed_ones() -> None:
    with pytest.raises(TaskInputError) as caught:
        registry.get("file_processing").parse_params({"path": "a.txt", "operations": ["stats", "shred"]})
    message = str(caught.value)
    assert "parameters.operations.1" in message
    for allowed in ("stats", "csv_to_json", "column_stats", "json_summary"):
        assert allowed in message


def test_text_stats_match_hashlib_and_exact_counts(settings: Settings) -> None:
    content = "hello world\n  two   words here\n\nlast line without newline"
    put_file(settings, "notes.txt", content)

    result = run(path="notes.txt")

    stats = result["results"]["stats"]
    assert stats == {
        "bytes": len(content.encode()),
        "lines": 4,
        "words": 9,
        "sha256": hashlib.sha256(content.encode()).hexdigest(),
    }
    assert result["processed"] is True
    assert (result["source"], result["format"]) == ("notes.txt", "text")
    output = Path(result["output"])
    assert output.parent == settings.output_dir.resolve()
    assert output.name.startswith("notes.") and output.suffix == ".json"
    assert read_report(result) == {
        "source": "notes.txt",
        "format": "text",
        "operations": ["stats"],
        "results": {"stats": stats},
    }


def test_word_counts_survive_chunk_boundaries(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    content = "alpha beta\tgamma\n delta epsilonzeta  eta\n"
    put_file(settings, "words.txt", content)
    for chunk_bytes in (1, 2, 3, 5, 7):
        monkeypatch.setattr(file_storage, "CHUNK_BYTES", chunk_bytes)
        stats = run(path="words.txt")["results"]["stats"]
        assert (stats["words"], stats["lines"], stats["bytes"]) == (len(content.split()), 2, len(content))


def test_empty_file_has_no_lines(settings: Settings) -> None:
    put_file(settings, "empty.txt", b"")
    stats = run(path="empty.txt")["results"]["stats"]
    assert stats == {"bytes": 0, "lines": 0, "words": 0, "sha256": hashlib.sha256(b"").hexdigest()}


def test_csv_to_json_writes_every_row_and_returns_a_sample(settings: Settings) -> None:
    put_file(settings, "people.csv", CSV_TEXT)

    result = run(path="people.csv", operations=["csv_to_json", "stats"], output="reports/people.json")

    assert result["output"] == str(settings.output_dir.resolve() / "reports" / "people.json")
    summary = result["results"]["csv_to_json"]
    assert summary["row_count"] == 6
    assert summary["columns"] == ["name", "age", "city"]
    assert summary["sample"][0] == {"name": "ada", "age": "36", "city": "London"}
    assert len(summary["sample"]) == 5
    written = read_report(result)["results"]
    assert written["stats"]["sha256"] == hashlib.sha256(CSV_TEXT.encode()).hexdigest()
    assert written["csv_to_json"]["row_count"] == 6
    assert written["csv_to_json"]["rows"][2] == {"name": "grace", "age": "85", "city": ""}
    # The last row is short: its missing column is null rather than dropped.
    assert written["csv_to_json"]["rows"][5] == {"name": "barbara", "age": "", "city": None}


def test_column_stats_summarise_numeric_and_text_columns(settings: Settings) -> None:
    put_file(settings, "people.csv", CSV_TEXT)

    stats = run(path="people.csv", operations=["column_stats"])["results"]["column_stats"]

    assert stats["row_count"] == 6
    name, age, city = stats["columns"]
    assert age == {
        "name": "age",
        "count": 6,
        "non_empty": 5,
        "numeric": 5,
        "type": "numeric",
        "min": 27,
        "max": 85,
        "mean": pytest.approx(269 / 5),
        "sum": 269,
    }
    assert city == {
        "name": "city",
        "count": 5,
        "non_empty": 4,
        "numeric": 0,
        "type": "text",
        "distinct": 2,
        "distinct_capped": False,
        "top": "London",
        "top_count": 3,
    }
    assert (name["type"], name["distinct"]) == ("text", 6)


def test_column_stats_mixed_and_decimal_values(settings: Settings) -> None:
    put_file(settings, "m.csv", "price,code\n1.5,7\n-2.25,x\n3,nan\n")
    price, code = run(path="m.csv", operations=["column_stats"])["results"]["column_stats"]["columns"]
    assert (price["min"], price["max"], price["sum"]) == (-2.25, 3, pytest.approx(2.25))
    assert (code["type"], code["numeric"], code["distinct"]) == ("text", 1, 3)


def test_json_summary_of_object_and_array(settings: Settings) -> None:
    put_file(settings, "conf.json", json.dumps({"a": 1, "b": [1, 2], "c": None}))
    put_file(settings, "list.json", json.dumps([{"x": 1}, {"x": 2}, 3, "s"]))

    assert run(path="conf.json", operations=["json_summary"])["results"]["json_summary"] == {
        "type": "object",
        "length": 3,
        "keys": ["a", "b", "c"],
        "keys_truncated": False,
    }
    assert run(path="list.json", operations=["json_summary"])["results"]["json_summary"] == {
        "type": "array",
        "length": 4,
        "item_types": {"object": 2, "number": 1, "string": 1},
    }


def test_json_lines_are_summarised_per_record(settings: Settings) -> None:
    put_file(settings, "events.jsonl", '{"id": 1}\n{"id": 2}\n\n[3]\n')
    result = run(path="events.jsonl", operations=["json_summary", "stats"])
    assert result["format"] == "json"
    assert result["results"]["json_summary"] == {
        "type": "json_lines",
        "length": 3,
        "item_types": {"object": 2, "array": 1},
    }


def test_invalid_json_is_an_input_error(settings: Settings) -> None:
    put_file(settings, "broken.json", '{"a": ')
    with pytest.raises(TaskInputError, match="not valid UTF-8 JSON"):
        run(path="broken.json", operations=["json_summary"])


def test_operation_that_does_not_fit_the_format_is_refused(settings: Settings) -> None:
    put_file(settings, "notes.txt", "a,b\n1,2\n")
    with pytest.raises(TaskInputError, match="'csv_to_json' needs a csv file"):
        run(path="notes.txt", operations=["csv_to_json"])
    with pytest.raises(TaskInputError, match="'json_summary' needs a json file"):
        run(path="notes.txt", operations=["json_summary"])
    # An explicit format overrides the extension.
    assert run(path="notes.txt", format="csv", operations=["csv_to_json"])["results"]["csv_to_json"]["row_count"] == 1


def test_csv_row_wider_than_header_fails_without_leaving_output(settings: Settings) -> None:
    put_file(settings, "wide.csv", "a,b\n1,2\n1,2,3\n")
    with pytest.raises(TaskInputError, match="data row 2 has 3 fields"):
        run(path="wide.csv", operations=["csv_to_json"], output="wide.json")
    assert list(settings.output_dir.iterdir()) == []


@pytest.mark.parametrize("escape", ["../secret.txt", "sub/../../secret.txt"])
def test_relative_path_escaping_files_dir_is_refused(settings: Settings, escape: str) -> None:
    (settings.files_dir.parent / "secret.txt").write_text("top secret")
    with pytest.raises(TaskInputError, match="path escapes FILES_DIR"):
        run(path=escape)


def test_absolute_path_outside_files_dir_is_refused(settings: Settings) -> None:
    secret = settings.files_dir.parent / "secret.txt"
    secret.write_text("top secret")
    with pytest.raises(TaskInputError, match="path escapes FILES_DIR"):
        run(path=str(secret))


def test_absolute_path_inside_files_dir_is_allowed(settings: Settings) -> None:
    path = put_file(settings, "inside.txt", "ok\n")
    assert run(path=str(path))["results"]["stats"]["lines"] == 1


def test_symlink_pointing_outside_files_dir_is_refused(settings: Settings) -> None:
    secret = settings.files_dir.parent / "secret.txt"
    secret.write_text("top secret")
    (settings.files_dir / "innocent.txt").symlink_to(secret)
    with pytest.raises(TaskInputError, match="path escapes FILES_DIR"):
        run(path="innocent.txt")


def test_missing_file_is_named(settings: Settings) -> None:
    with pytest.raises(TaskInputError, match=re.escape("file not found in FILES_DIR: 'nope.csv'")):
        run(path="nope.csv")


def test_directory_is_not_a_file(settings: Settings) -> None:
    (settings.files_dir / "folder").mkdir()
    with pytest.raises(TaskInputError, match="not a regular file"):
        run(path="folder")


def test_file_over_the_size_limit_is_refused(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    put_file(settings, "big.txt", "x" * 11)
    monkeypatch.setattr(file_storage, "MAX_INPUT_BYTES", 10)
    with pytest.raises(TaskInputError, match="11 bytes; the limit is 10 bytes"):
        run(path="big.txt")


@pytest.mark.parametrize("output", ["../out.json", "a/../../out.json", "{root}/out.json"])
def test_output_escaping_output_dir_is_refused(settings: Settings, output: str) -> None:
    put_file(settings, "notes.txt", "hi\n")
    root = settings.output_dir.parent
    with pytest.raises(TaskInputError, match="path escapes OUTPUT_DIR"):
        run(path="notes.txt", output=output.format(root=root))
    assert not (root / "out.json").exists()
    assert not settings.output_dir.exists()


def test_output_through_symlink_outside_output_dir_is_refused(settings: Settings) -> None:
    put_file(settings, "notes.txt", "hi\n")
    elsewhere = settings.output_dir.parent / "elsewhere"
    elsewhere.mkdir()
    settings.output_dir.mkdir()
    (settings.output_dir / "link").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(TaskInputError, match="path escapes OUTPUT_DIR"):
        run(path="notes.txt", output="link/report.json")
    assert list(elsewhere.iterdir()) == []


def test_output_directory_gets_a_generated_name(settings: Settings) -> None:
    put_file(settings, "notes.txt", "hi\n")
    result = run(path="notes.txt", output="daily/")
    output = Path(result["output"])
    assert output.parent == settings.output_dir.resolve() / "daily"
    assert output.name.startswith("notes.")
    assert read_report(result)["results"]["stats"]["bytes"] == 3


def test_module_imports_no_transport_or_boto3() -> None:
    code = (
        "import sys, jobs.file_processing; "
        "loaded = {'flask', 'pika', 'redis', 'boto3', 'botocore'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(file_processing.__file__).parent.parent)


@pytest.fixture
def s3(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Yield a boto3 S3 client on moto's in-process fake, with a bucket named `inbox`."""
    moto = pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with moto.mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="inbox")
        yield client


def test_s3_input_and_output_round_trip(settings: Settings, s3: Any) -> None:
    s3.put_object(Bucket="inbox", Key="in/people.csv", Body=CSV_TEXT.encode())

    result = run(path="s3://inbox/in/people.csv", operations=["stats", "csv_to_json"], output="s3://inbox/out/")

    assert result["source"] == "s3://inbox/in/people.csv"
    assert result["format"] == "csv"
    assert result["output"].startswith("s3://inbox/out/people.")
    assert result["results"]["stats"]["sha256"] == hashlib.sha256(CSV_TEXT.encode()).hexdigest()
    listed = s3.list_objects_v2(Bucket="inbox", Prefix="out/")["Contents"]
    assert [f"s3://inbox/{item['Key']}" for item in listed] == [result["output"]]
    key = result["output"].removeprefix("s3://inbox/")
    written = json.loads(s3.get_object(Bucket="inbox", Key=key)["Body"].read())
    assert written["source"] == "s3://inbox/in/people.csv"
    assert written["results"]["csv_to_json"]["row_count"] == 6
    assert written["results"]["csv_to_json"]["rows"][4] == {"name": "ken", "age": "80", "city": "London"}
    assert list(settings.output_dir.glob("*")) == []


def test_s3_input_with_default_local_output(settings: Settings, s3: Any) -> None:
    s3.put_object(Bucket="inbox", Key="data.json", Body=b"[1, 2]")
    result = run(path="s3://inbox/data.json", operations=["json_summary"])
    assert Path(result["output"]).parent == settings.output_dir.resolve()
    assert read_report(result)["results"]["json_summary"]["length"] == 2


def test_missing_s3_key_or_bucket_is_an_input_error(settings: Settings, s3: Any) -> None:
    with pytest.raises(TaskInputError, match="NoSuchKey"):
        run(path="s3://inbox/absent.csv")
    with pytest.raises(TaskInputError, match="NoSuchBucket"):
        run(path="s3://no-such-bucket/a.csv")
    s3.put_object(Bucket="inbox", Key="a.txt", Body=b"hi")
    with pytest.raises(TaskInputError, match="NoSuchBucket"):
        run(path="s3://inbox/a.txt", output="s3://no-such-bucket/out/")


def test_s3_buckets_confines_reads_and_writes(settings: Settings, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    confined = dataclasses.replace(settings, s3_buckets=("inbox", "reports"))
    monkeypatch.setattr("jobs.file_processing.get_settings", lambda: confined)
    s3.put_object(Bucket="inbox", Key="data.json", Body=b"[1, 2]")
    assert run(path="s3://inbox/data.json", operations=["json_summary"])["source"] == "s3://inbox/data.json"
    with pytest.raises(TaskInputError, match=r"bucket 'secrets' is not one this deployment may use \(S3_BUCKETS"):
        run(path="s3://secrets/keys.json")
    with pytest.raises(TaskInputError, match="bucket 'elsewhere' is not one"):
        run(path="s3://inbox/data.json", output="s3://elsewhere/out/")


def test_s3_object_over_the_size_limit_is_refused(settings: Settings, s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    s3.put_object(Bucket="inbox", Key="big.txt", Body=b"x" * 11)
    monkeypatch.setattr(file_storage, "MAX_INPUT_BYTES", 10)
    with pytest.raises(TaskInputError, match="the limit is 10 bytes"):
        run(path="s3://inbox/big.txt")
