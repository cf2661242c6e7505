"""Queue management and retry on the real Redis with real worker processes of every class.

A paused queue is not taken from (by an idle worker already blocked on it, too)
while another queue still runs, and resume restarts it; empty drops queued
tasks; a failed and a revoked task run again with the same id.
"""

from __future__ import annotations

import pytest

from app import create_app
from tests.helpers import keyed_settings, submit, wait_until
from tests.processes import spawn_worker, stop_worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WORKER_CLASSES = ["batch", "simple", "fork"]


@pytest.fixture
def client(redis_url, real_redis):
    return create_app(keyed_settings({"REDIS_URL": redis_url, "RETRY_BASE_S": "0"}), real_redis).test_client()


def state(client, task_id: str) -> str:
    return client.get(f"/api/tasks/{task_id}").json["state"]


def queue_row(client, name: str) -> dict:
    return next(row for row in client.get("/api/queues").json["queues"] if row["name"] == name)


def finished(client, task_id: str) -> bool:
    return state(client, task_id) in ("SUCCESS", "FAILURE")


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_paused_queue_waits_while_another_runs_and_resume_restarts_it(redis_url, client, worker_class):
    worker = spawn_worker(redis_url, WORKER_CLASS=worker_class)
    try:
        wait_until(lambda: queue_row(client, "normal_priority")["workers"] == 1, 30, "the worker to register")
        warm = submit(client, "test_count")  # the worker has taken a task and is back, blocked on its queues
        wait_until(lambda: state(client, warm) == "SUCCESS", 30, "the first task")
        assert client.post("/api/queues/normal_priority/pause").json == {"queue": "normal_priority", "paused": True}
        held = submit(client, "test_count")
        first, second = submit(client, "test_count", priority="high"), submit(client, "test_count", priority="low")
        # Unpaused, the idle worker pops `held` the moment it is queued, before the two after it.
        wait_until(lambda: state(client, first) == "SUCCESS" and state(client, second) == "SUCCESS", 30, "others")
        row = queue_row(client, "normal_priority")
        assert row["paused"] is True and row["depth"]["queued"] == 1 and row["oldest_queued_age_s"] >= 0
        assert state(client, held) == "PENDING"
        client.post("/api/queues/normal_priority/resume")
        wait_until(lambda: state(client, held) == "SUCCESS", 10, "the resumed queue's task")
        assert queue_row(client, "normal_priority")["finished_last_minute"] == 2
    finally:
        stop_worker(worker)


def test_empty_drops_queued_tasks_and_the_queue_goes_on(redis_url, real_redis, client):
    client.post("/api/queues/low_priority/pause")
    dropped = [submit(client, "test_count", priority="low") for _ in range(5)]
    worker = spawn_worker(redis_url)
    try:
        answer = client.post("/api/queues/low_priority/empty")
        assert answer.status_code == 200, answer.json
        assert answer.json["removed"] == len(dropped)
        client.post("/api/queues/low_priority/resume")
        after = submit(client, "test_count", priority="low")
        wait_until(lambda: state(client, after) == "SUCCESS", 30, "a task queued after the empty")
        assert all(client.get(f"/api/tasks/{task_id}").status_code == 404 for task_id in dropped)
        assert real_redis.get("runs:total") == b"1"
    finally:
        stop_worker(worker)


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_failed_and_a_revoked_task_run_again_with_the_same_id(redis_url, real_redis, client, worker_class):
    failing = submit(client, "test_flaky", {"succeed_on": 2}, max_retries=0)
    revoked = submit(client, "test_count", priority="high")
    assert client.post(f"/api/tasks/{revoked}/cancel").json["state"] == "REVOKED"
    worker = spawn_worker(redis_url, WORKER_CLASS=worker_class)
    try:
        wait_until(lambda: state(client, failing) == "FAILURE", 30, "the first attempt to fail")
        for task_id in (failing, revoked):
            answer = client.post(f"/api/tasks/{task_id}/retry")
            assert answer.status_code == 202 and answer.json["task_id"] == task_id, answer.json
        wait_until(lambda: finished(client, failing) and finished(client, revoked), 30, "the retried tasks")
        done = client.get(f"/api/tasks/{failing}").json
        assert done["state"] == "SUCCESS" and done["status"]["result"] == {"succeeded_on": 2}
        assert done["status"]["attempts"] == 2 and len(done["status"]["errors"]) == 1
        assert state(client, revoked) == "SUCCESS" and real_redis.get(f"runs:{revoked}") == b"1"
    finally:
        stop_worker(worker)


@pytest.mark.parametrize("worker_class", ["batch", "simple"])
def test_a_worker_with_every_task_queue_paused_waits_and_resumes(redis_url, client, worker_class):
    # Only the schedules queue is left to block on (a single key, doubled: see core.storage.paused): the worker
    # keeps blocking on it, takes nothing paused, and sees the resume.
    for name in ("high_priority", "normal_priority", "low_priority"):
        client.post(f"/api/queues/{name}/pause")
    held = {priority: submit(client, "test_count", priority=priority) for priority in ("high", "normal", "low")}
    worker = spawn_worker(redis_url, WORKER_CLASS=worker_class)
    try:
        wait_until(lambda: queue_row(client, "low_priority")["workers"] == 1, 30, "the worker to register")
        client.post("/api/queues/low_priority/resume")
        wait_until(lambda: state(client, held["low"]) == "SUCCESS", 10, "the resumed low task")
        assert state(client, held["high"]) == "PENDING" and state(client, held["normal"]) == "PENDING"
        assert worker.poll() is None
    finally:
        stop_worker(worker)
