"""Periodic tasks over the API, fired by a real `rqscheduler` process and run by a real worker."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from app import create_app
from tests.helpers import keyed_settings
from tests.processes import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.slow]

RQSCHEDULER = [sys.executable, "-c", "from rq_scheduler.scripts.rqscheduler import main; main()"]


def test_interval_schedule_runs_as_separate_tasks_until_deleted(redis_url, real_redis):
    client = create_app(keyed_settings({"REDIS_URL": redis_url}), real_redis).test_client()
    body = {"task_type": "data_processing", "priority": "high", "parameters": {"data": [1, 2]}, "interval_seconds": 1}
    created = client.post("/api/schedules", json=body)
    assert created.status_code == 201, created.json
    schedule_id = created.json["schedule_id"]
    assert [s["schedule_id"] for s in client.get("/api/schedules").json["schedules"]] == [schedule_id]

    env = {**os.environ, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    scheduler_argv = [*RQSCHEDULER, "--url", redis_url, "-i", "0.5", "-j", "core.storage.queues.JSONJob", "--quiet"]
    processes = [
        subprocess.Popen(scheduler_argv, cwd=ROOT, env=env),
        subprocess.Popen([sys.executable, "-m", "jobs.worker", "--simple"], cwd=ROOT, env=env),
    ]
    try:
        deadline = time.monotonic() + 30
        runs: list[dict] = []
        while time.monotonic() < deadline:
            runs = [t for t in client.get("/api/tasks?state=SUCCESS").json["tasks"] if t["schedule_id"] == schedule_id]
            if len(runs) >= 2:
                break
            time.sleep(0.2)
        assert len(runs) >= 2, runs
        assert len({run["task_id"] for run in runs}) == len(runs)
        detail = client.get(f"/api/tasks/{runs[0]['task_id']}").json
        assert detail["status"]["schedule_id"] == schedule_id
        assert detail["status"]["result"]["processed"] is True

        assert client.delete(f"/api/schedules/{schedule_id}").status_code == 200
        assert client.get("/api/schedules").json["total"] == 0
        time.sleep(2.5)  # a deleted schedule fires no more
        settled = client.get("/api/tasks?priority=high&limit=500").json["total"]
        time.sleep(2.0)
        assert client.get("/api/tasks?priority=high&limit=500").json["total"] == settled
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=15)
