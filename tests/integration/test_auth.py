"""API keys against the real Redis and real gunicorn processes: refusing to start, the bootstrap key, the command."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from app.auth import CACHE_TTL_S
from tests.helpers import TEST_API_KEY, wait_until
from tests.processes import ROOT, free_port, http, running_system

pytestmark = pytest.mark.redis


def keys_command(redis_url: str, *argv: str) -> str:
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "app.keys", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_api_refuses_to_start_without_any_key(redis_url):
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT), "TASKRELAY_BOOTSTRAP_KEY": ""}
    env.pop("TASKRELAY_AUTH", None)
    api = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{free_port()}", "--workers", "1", "app:create_app()"]
    result = subprocess.run(api, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    [line] = [line for line in result.stderr.splitlines() if '"logger": "taskrelay.api"' in line]
    assert "cannot start the API: TASKRELAY_AUTH is on and no API key exists: set TASKRELAY_BOOTSTRAP_KEY" in line


def test_the_bootstrap_key_is_admin_and_nothing_else_gets_in(redis_url, real_redis):
    with running_system(redis_url, workers=1) as system:
        code, health = http("GET", f"{system.base_url}/api/health", headers={})
        assert code == 200 and health["auth"] == "on"
        code, body = http("GET", f"{system.base_url}/api/tasks", headers={})
        assert code == 401 and body["error"] == "unauthorized"
        code, _ = http("GET", f"{system.base_url}/api/tasks", headers={"Authorization": f"Bearer {TEST_API_KEY}"})
        assert code == 200
        task_id = system.submit({"task_type": "data_processing", "parameters": {"data": [1]}})
        assert system.wait_for(task_id)["state"] == "SUCCESS"
        assert http("POST", f"{system.base_url}/api/tasks/purge")[0] == 200
        assert real_redis.hkeys("taskrelay:apikeys") != []
        assert TEST_API_KEY.encode() not in b"".join(real_redis.hvals("taskrelay:apikeys"))


def test_a_key_from_the_command_works_until_it_is_revoked(redis_url):
    printed = keys_command(redis_url, "create", "--name", "ci", "--scopes", "submit")
    [key] = re.findall(r"^(tr_\S+)$", printed, re.MULTILINE)
    with running_system(redis_url, workers=1, env={"TASKRELAY_BOOTSTRAP_KEY": ""}) as system:
        mine = {"X-API-Key": key}
        task = {"task_type": "data_processing", "parameters": {"data": [1]}}
        assert http("POST", f"{system.base_url}/api/tasks", task, headers=mine)[0] == 202
        code, body = http("POST", f"{system.base_url}/api/tasks/purge", headers=mine)
        assert code == 403 and body["scope_needed"] == "admin"
        assert key not in keys_command(redis_url, "list")
        keys_command(redis_url, "revoke", "ci")

        def refused() -> bool:
            return http("GET", f"{system.base_url}/api/tasks", headers=mine)[0] == 401

        wait_until(refused, CACHE_TTL_S + 5, "the revoked key to be refused")
