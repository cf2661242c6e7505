"""The committed Postman collection, run by newman against a live API and a worker: every request's tests pass."""

from __future__ import annotations

import json
import subprocess

import pytest

from postman.generate import COLLECTION, ENVIRONMENT
from tests.conftest import require_tool
from tests.helpers import TEST_API_KEY
from tests.processes import running_system

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def test_newman_runs_the_collection_green_against_a_live_api(redis_url, tmp_path):
    newman = require_tool("newman", "it runs the Postman collection (npm install -g newman)")
    report = tmp_path / "newman.json"
    with running_system(redis_url, workers=1) as system:
        command = [
            newman,
            "run",
            str(COLLECTION),
            "--environment",
            str(ENVIRONMENT),
            "--env-var",
            f"baseUrl={system.base_url}",
            "--env-var",
            f"apiKey={TEST_API_KEY}",
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
            "--color",
            "off",
        ]
        run = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    executions = json.loads(report.read_text())["run"]["executions"]
    requests = json.loads(COLLECTION.read_text())["item"]
    assert [e["item"]["name"] for e in executions] == [item["name"] for item in requests]
    for execution in executions:
        assertions = execution.get("assertions") or []
        assert len(assertions) >= 1, f"{execution['item']['name']} ran no test"
        assert [a["assertion"] for a in assertions if a.get("error")] == [], execution["item"]["name"]
        sent = {header["key"]: header["value"] for header in execution["request"]["header"]}
        assert sent["X-API-Key"] == TEST_API_KEY
