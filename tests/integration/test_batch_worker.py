"""WORKER_CLASS=batch against the real Redis: same outcomes as RQ's workers, and nothing lost on kill or stop."""

from __future__ import annotations

import signal
import time

import pytest

from app import create_app
from core.storage import handoff, keys
from jobs.batch_worker import BATCH_SIZE
from jobs.worker import build_worker
from tests.helpers import keyed_settings, submit, wait_until
from tests.processes import killed_and_replaced, spawn_worker, stop_worker

pytestmark = pytest.mark.redis


def make_client(redis_url, real_redis):
    return create_app(keyed_settings({"REDIS_URL": redis_url, "RETRY_BASE_S": "0"}), real_redis).test_client()


def running(client, task_id: str) -> bool:
    """Whether the task's code is running: claimed tasks show STARTED too, but only a running one reports progress."""
    status = client.get(f"/api/tasks/{task_id}").json
    return status["state"] == "STARTED" and status["status"]["progress"] is not None


WIDE_CLAIMS = "import jobs.batch_worker as b; b.CLAIM_BUDGET_S = 30.0"
"""Run by the worker process before it starts (tests/processes.py spawn_worker): claims of up to BATCH_SIZE."""


def warm_up(client) -> None:
    """Queue two fast high tasks ahead: a fresh worker claims one job, times it, then claims the rest together."""
    for _ in range(2):
        submit(client, priority="high")


def test_batches_run_every_task_with_the_usual_outcomes(redis_url, real_redis):
    client = make_client(redis_url, real_redis)
    lows = [submit(client, "test_count", priority="low") for _ in range(BATCH_SIZE + 10)]
    flaky = submit(client, "test_flaky", {"succeed_on": 2})
    bad = submit(client, "test_bad_input")
    highs = [submit(client, priority="high") for _ in range(BATCH_SIZE + 5)]
    worker = build_worker(
        keyed_settings({"REDIS_URL": redis_url, "TASKRELAY_TASK_MODULES": "tests.fixture_tasks"}), "batch"
    )
    worker.work(burst=True, logging_level="WARNING")

    for task_id in [*lows, *highs]:
        answer = client.get(f"/api/tasks/{task_id}").json
        assert answer["state"] == "SUCCESS", answer
        assert answer["status"]["attempts"] == 1
    assert client.get(f"/api/tasks/{highs[0]}").json["status"]["result"]["processed"] is True
    assert real_redis.get("runs:total") == str(len(lows)).encode()
    assert client.get(f"/api/tasks/{flaky}").json["status"]["attempts"] == 2
    assert client.get(f"/api/tasks/{bad}").json["state"] == "FAILURE"
    completed = client.get("/api/tasks?type=completed&limit=500").json
    assert completed["total"] == len(lows) + len(highs) + 2
    assert client.get("/api/tasks?type=active").json["total"] == 0  # no claim left behind
    started = lambda ids: [client.get(f"/api/tasks/{i}").json["status"]["started_at"] for i in ids]  # noqa: E731
    assert max(started(highs)) < min(started(lows))


def test_a_claimed_job_whose_key_had_a_ttl_cannot_expire_while_it_runs(redis_url, real_redis):
    client = make_client(redis_url, real_redis)
    task_id = submit(client, "test_count")
    real_redis.expire(f"rq:job:{task_id}", 300)
    worker = build_worker(
        keyed_settings({"REDIS_URL": redis_url, "TASKRELAY_TASK_MODULES": "tests.fixture_tasks"}), "batch"
    )
    worker.work(burst=True, logging_level="WARNING")
    answer = client.get(f"/api/tasks/{task_id}").json
    assert answer["state"] == "SUCCESS"
    assert answer["status"]["result"]["key_ttl"] == -1  # persistent while running, as Job.perform() leaves it
    assert real_redis.ttl(f"rq:job:{task_id}") > 300  # then the result TTL, as after any success


@pytest.mark.slow
def test_a_killed_batch_worker_loses_no_task_and_runs_none_twice(redis_url, real_redis):
    client = make_client(redis_url, real_redis)
    warm_up(client)
    body = {"task_type": "test_hold", "parameters": {"release_key": "go", "max_s": 60}, "max_retries": 1}
    held = client.post("/api/tasks", json=body).json["task_id"]  # it did start: retried like any lost task
    queued = [submit(client, "test_count") for _ in range(10)]  # claimed with it, never started
    # A claim holds about CLAIM_BUDGET_S (50 ms) of observed work: on a loaded machine the warm-up tasks can time
    # slow enough that eleven do not fit. This worker gets a budget they always fit in.
    first = spawn_worker(redis_url, TASKRELAY_TEST_WORKER_CODE=WIDE_CLAIMS)
    second = None
    try:
        wait_until(lambda: running(client, held), 30, "the held task to run")
        assert real_redis.llen("rq:queue:normal_priority") == 0  # all eleven claimed by the batch
        stop_worker(first, kill=True)
        real_redis.set("go", "1")
        second = spawn_worker(redis_url)
        wait_until(lambda: real_redis.get("runs:total") == b"10", 60, "the claimed tasks to run")
        wait_until(lambda: client.get(f"/api/tasks/{held}").json["state"] == "SUCCESS", 30, "the held task's retry")
        for task_id in queued:
            answer = client.get(f"/api/tasks/{task_id}").json
            assert answer["state"] == "SUCCESS" and answer["status"]["attempts"] == 1, answer
            assert answer["status"]["errors"] == []
            assert real_redis.get(f"runs:{task_id}") == b"1"
    finally:
        for process in (first, second):
            if process is not None:
                stop_worker(process, kill=True)


@pytest.mark.slow
def test_a_task_handed_to_a_worker_killed_while_idle_runs_on_the_next_one(redis_url, real_redis):
    client = make_client(redis_url, real_redis)
    lasting = "import core.storage.handoff as h; h.IDLE_TICKET_S = 120.0"  # the dead worker stays listed as idle
    first = spawn_worker(redis_url, TASKRELAY_TEST_WORKER_CODE=lasting)
    second = None
    try:
        wait_until(lambda: real_redis.llen(handoff.IDLE_KEY) == 1, 60, "the worker to register as idle")
        [name] = real_redis.lrange(handoff.IDLE_KEY, 0, -1)
        stop_worker(first, kill=True)
        task_id = submit(client)
        assert real_redis.hget(keys.job_key(task_id), keys.WORKER_FIELD) == name  # handed to the dead worker
        assert real_redis.llen(handoff.IDLE_KEY) == 0  # and only once
        second = spawn_worker(redis_url)
        wait_until(lambda: client.get(f"/api/tasks/{task_id}").json["state"] == "SUCCESS", 60, "the task to run")
        assert client.get(f"/api/tasks/{task_id}").json["status"]["attempts"] == 1  # requeued as never started
    finally:
        for process in (first, second):
            if process is not None:
                stop_worker(process, kill=True)


@pytest.mark.slow
def test_sigterm_returns_unstarted_tasks_to_their_queue(redis_url, real_redis):
    client = make_client(redis_url, real_redis)
    warm_up(client)
    held = submit(client, "test_hold", {"release_key": "go", "max_s": 60})
    queued = [submit(client, "test_count") for _ in range(10)]
    worker = spawn_worker(redis_url)
    try:
        wait_until(lambda: running(client, held), 30, "the held task to run")
        worker.send_signal(signal.SIGTERM)  # warm shutdown: finish the running task, then stop
        # RQ writes the request on the worker's key once it took it while busy: only then is the task released.
        wait_until(lambda: any(real_redis.hget(k, "shutdown_requested_date") for k in real_redis.keys("rq:worker:*")))
        real_redis.set("go", "1")
        assert worker.wait(timeout=30) == 0
    finally:
        stop_worker(worker, kill=True)
    assert client.get(f"/api/tasks/{held}").json["state"] == "SUCCESS"
    assert [i.decode() for i in real_redis.lrange("rq:queue:normal_priority", 0, -1)] == queued
    assert all(client.get(f"/api/tasks/{i}").json["status"]["status"] == "queued" for i in queued)
    assert client.get("/api/tasks?type=active").json["total"] == 0


@pytest.mark.slow
def test_purge_drops_claimed_tasks_before_they_run(redis_url, real_redis):
    client = make_client(redis_url, real_redis)
    warm_up(client)
    held = submit(client, "test_hold", {"release_key": "go", "max_s": 60})
    queued = [submit(client, "test_count") for _ in range(5)]
    worker = spawn_worker(redis_url)
    try:
        wait_until(lambda: running(client, held), 30, "the held task to run")
        purged = client.post("/api/tasks/purge").json
        assert purged["details"]["active_tasks_revoked"] == 6  # the running one, and five claimed
        real_redis.set("go", "1")
        time.sleep(1.5)  # room for the worker to (wrongly) run the claimed tasks
        assert real_redis.get("runs:total") is None
        for task_id in queued:
            assert client.get(f"/api/tasks/{task_id}").status_code == 404
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


@pytest.mark.slow
def test_a_kill_reruns_only_the_running_task_and_the_last_moments_successes(redis_url, real_redis):
    """5 ms tasks: a SIGKILLed worker re-runs the task it was running plus what finished in the last ~50 ms."""
    client = make_client(redis_url, real_redis)
    # Retries allowed: a success the kill forgot comes back as an abandoned attempt, and runs again.
    ids = [submit(client, "test_count", {"sleep_s": 0.005}, max_retries=3) for _ in range(300)]
    hundred = lambda: int(real_redis.get("runs:total") or 0) >= 100  # noqa: E731
    with killed_and_replaced(redis_url, hundred, "a hundred tasks to run"):
        done = lambda: client.get("/api/tasks?state=SUCCESS&limit=1").json["total"] == len(ids)  # noqa: E731
        wait_until(done, 90, "every task to finish after the kill")
    pipe = real_redis.pipeline()
    for task_id in ids:
        pipe.get(f"runs:{task_id}")
    runs = [int(n) for n in pipe.execute()]
    assert min(runs) == 1
    reruns = sum(n - 1 for n in runs)
    # 50 ms of 5 ms tasks is 10 successes, plus the one running; 2 more for a task overrunning its estimate.
    assert reruns <= 13, f"{reruns} tasks ran again after one kill"
