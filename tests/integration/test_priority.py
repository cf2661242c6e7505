"""Priority points one way: with a backlog, every queued high task starts before any normal, and normal before low."""

from __future__ import annotations

import pytest
from rq.job import Job

from app import create_app
from core.connection import connect
from core.settings import WORKER_CLASSES
from core.storage.queues import SERIALIZER
from jobs.worker import build_worker
from tests.helpers import keyed_settings, submit, wait_until
from tests.processes import spawn_worker, stop_worker

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_backlog_runs_high_then_normal_then_low(redis_url, worker_class):
    connection = connect(redis_url)
    settings = keyed_settings({"REDIS_URL": redis_url})
    client = create_app(settings, connection).test_client()
    # Lowest first, so arrival order alone would run them the wrong way round.
    submitted = {p: [submit(client, priority=p) for _ in range(15)] for p in ("low", "normal", "high")}
    build_worker(settings, worker_class).work(burst=True, logging_level="WARNING")

    def started(priority: str) -> list:
        jobs = Job.fetch_many(submitted[priority], connection=connection, serializer=SERIALIZER)
        return sorted(job.started_at for job in jobs if job is not None)

    high, normal, low = started("high"), started("normal"), started("low")
    assert len(high) == len(normal) == len(low) == 15
    assert high[-1] < normal[0]
    assert normal[-1] < low[0]


@pytest.mark.slow
def test_a_high_task_overtakes_a_backlog_of_slow_low_tasks(redis_url, real_redis):
    """Two batch workers, 100 ms low tasks: at most one low task per worker starts after the high one is queued."""
    client = create_app(keyed_settings({"REDIS_URL": redis_url}), real_redis).test_client()
    lows = [submit(client, "test_count", {"sleep_s": 0.1}, priority="low") for _ in range(60)]
    workers = [spawn_worker(redis_url) for _ in range(2)]
    try:
        wait_until(lambda: int(real_redis.get("runs:total") or 0) >= 6, 30, "both workers to be busy")
        high = submit(client, priority="high")
        wait_until(lambda: client.get(f"/api/tasks/{high}").json["state"] == "SUCCESS", 30, "the high task")
    finally:
        for worker in workers:
            stop_worker(worker)
    connection = connect(redis_url)
    high_job = Job.fetch(high, connection=connection, serializer=SERIALIZER)
    queued_at, started_at = high_job.enqueued_at, high_job.started_at
    assert queued_at is not None and started_at is not None
    jobs = Job.fetch_many(lows, connection=connection, serializer=SERIALIZER)
    overtook = [job.id for job in jobs if job and job.started_at and queued_at < job.started_at < started_at]
    assert len(overtook) <= 2, f"{len(overtook)} low tasks started after the high one was queued"
    assert (started_at - queued_at).total_seconds() < 2.0  # ~0.1 s here; the bound allows for a loaded CI machine
