"""A task past its timeout_s is stopped, retried, then failed, on every worker class (the default batch one too)."""

from __future__ import annotations

import time

import pytest

from app import create_app
from core.settings import WORKER_CLASSES
from tests.helpers import keyed_settings, wait_until
from tests.processes import spawn_worker, stop_worker

pytestmark = [pytest.mark.redis]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_task_past_its_timeout_is_stopped_then_retried_then_failed(redis_url, real_redis, worker_class):
    client = create_app(keyed_settings({"REDIS_URL": redis_url, "RETRY_BASE_S": "0"}), real_redis).test_client()
    slow = client.post("/api/tasks", json={"task_type": "test_slow", "parameters": {"sleep_s": 60}}).json["task_id"]
    quick = client.post("/api/tasks", json={"task_type": "test_slow", "parameters": {"sleep_s": 0}}).json["task_id"]
    worker = spawn_worker(redis_url, WORKER_CLASS=worker_class)
    started = time.monotonic()
    try:
        failed = wait_until(
            lambda: (s := client.get(f"/api/tasks/{slow}").json)["state"] == "FAILURE" and s,
            30,
            "the slow task to fail on its timeout",
        )
        done = wait_until(
            lambda: (s := client.get(f"/api/tasks/{quick}").json)["state"] == "SUCCESS" and s, 20, "the quick task"
        )
    finally:
        stop_worker(worker, kill=True)
    assert time.monotonic() - started < 30  # two 1 s attempts, not the task's 60 s
    errors = failed["status"]["errors"]
    assert [e["attempt"] for e in errors] == [1, 2]
    assert all("Timeout" in e["type"] for e in errors), errors
    assert done["status"]["result"] == {"slept": 0}  # the worker went on after the timeouts
