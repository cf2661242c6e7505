"""Fuzz the live API (gunicorn, a worker, the real Redis) with schemathesis against the spec it serves.

Every check the contract promises must hold on every generated case: no 5xx,
only documented statuses and content types, bodies that match their schema,
and schema-violating requests refused. The run is bounded (FUZZ_TIMEOUT_S)
and its counts are printed (`pytest -s`) and recorded as junit properties.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import TEST_API_KEY
from tests.processes import running_system

pytestmark = [pytest.mark.redis, pytest.mark.slow]

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
)
MAX_EXAMPLES = 60
"""Generated cases per operation and phase (coverage, fuzzing); the examples and stateful phases add more."""
FUZZ_TIMEOUT_S = 80
"""Wall time the schemathesis run may take, in seconds; past it the test fails."""
SEED = int(os.environ.get("FUZZ_SEED", "13"))
"""Fixed so a failure reproduces; set FUZZ_SEED to explore other cases."""
CONFIG = Path(__file__).with_name("schemathesis.toml")
API_ENV: dict[str, str] = {}
"""running_system gives the API TEST_API_KEY as its bootstrap (admin) key."""
HEADERS: tuple[str, ...] = (f"X-API-Key: {TEST_API_KEY}",)
"""Sent with every request."""


def test_the_live_api_answers_as_its_spec_says(redis_url, tmp_path, record_property):
    report = tmp_path / "schemathesis.json"
    with running_system(redis_url, workers=1, env=API_ENV) as system:
        command = [
            str(Path(sys.executable).with_name("schemathesis")),
            "--config-file",
            str(CONFIG),
            "--no-color",
            "run",
            f"{system.base_url}/openapi/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",  # with 2, Python 3.11's ast.parse, which hypothesis calls, now and then fails in a thread
            "--report",
            "json",
            "--report-json-path",
            str(report),
            *(f"--header={header}" for header in HEADERS),
        ]
        run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=FUZZ_TIMEOUT_S)
    result = json.loads(report.read_text())
    cases, operations = result["test_cases"], result["operations"]
    counts = (
        f"fuzz counts: {cases['generated']} cases over {operations['tested']} of {operations['total']} operations "
        f"in {result['running_time']:.1f} s (seed {SEED}), {cases['with_failures']} with failures"
    )
    print(counts)
    for name in ("generated", "with_failures"):
        record_property(f"fuzz_{name}", cases[name])
    assert run.returncode == 0 and cases["with_failures"] == 0 and not result["errors"], f"{counts}\n{run.stdout}"
    assert operations["tested"] == operations["total"] == 27  # with /healthz, /readyz and /metrics
    assert cases["generated"] > 1000  # a run that generated almost nothing proves nothing
