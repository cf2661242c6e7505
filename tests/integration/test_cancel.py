"""Cancel a running task on the real Redis: the worker stops it within 2 s, it ends REVOKED, nothing retries it."""

from __future__ import annotations

import time

import pytest

from app import create_app
from core.storage import metrics
from tests.helpers import keyed_settings, submit, wait_until
from tests.processes import spawn_worker, stop_worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def running(client, task_id: str) -> bool:
    """Whether its code runs: a batch worker's claimed tasks show STARTED too, but count no attempt until they run."""
    status = client.get(f"/api/tasks/{task_id}").json
    return status["state"] == "STARTED" and status["status"]["attempts"] == 1


@pytest.mark.parametrize(
    ("worker_class", "task_type", "parameters"),
    [
        ("batch", "test_hold", {"release_key": "never", "max_s": 60}),  # Python code looping
        ("batch", "test_count", {"sleep_s": 60}),  # one long time.sleep: SIGALRM interrupts it
        ("simple", "test_count", {"sleep_s": 60}),
        ("fork", "test_hold", {"release_key": "never", "max_s": 60}),
    ],
    ids=["batch-loop", "batch-sleep", "simple", "fork"],
)
def test_a_running_task_stops_within_2_s_and_is_revoked(redis_url, real_redis, worker_class, task_type, parameters):
    client = create_app(keyed_settings({"REDIS_URL": redis_url, "RETRY_BASE_S": "0"}), real_redis).test_client()
    task_id = submit(client, task_type, parameters, max_retries=3)
    after = submit(client, "test_count")  # queued behind it: the worker goes on with its work
    worker = spawn_worker(redis_url, WORKER_CLASS=worker_class)
    try:
        wait_until(lambda: running(client, task_id), 30, "the task to start running")
        started = time.monotonic()
        answer = client.post(f"/api/tasks/{task_id}/cancel")
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.json
        assert answer.json["state"] == "REVOKED"
        assert took < 2.0, f"the cancel took {took:.2f} s"
        wait_until(lambda: client.get(f"/api/tasks/{after}").json["state"] == "SUCCESS", 30, "the next task")
        status = client.get(f"/api/tasks/{task_id}").json
        assert status["state"] == "REVOKED", status
        assert status["status"]["attempts"] == 1  # not retried, although it had retries left
        assert client.get("/api/tasks?type=active").json["total"] == 0
        assert worker.poll() is None  # the worker survived the interruption
        finished = metrics.snapshot(real_redis).finished
        assert finished.get((task_type, "normal_priority", "REVOKED")) == 1, finished  # counted once, by someone
    finally:
        stop_worker(worker, kill=True)
