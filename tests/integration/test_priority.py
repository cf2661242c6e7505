"""Priority points one way: with a backlog, every queued high task starts before any normal, and normal before low."""

from __future__ import annotations

import pytest
from rq.job import Job

from app import create_app
from core.connection import connect
from core.settings import WORKER_CLASSES, Settings
from core.storage.queues import SERIALIZER
from jobs.worker import build_worker
from tests.helpers import submit

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_backlog_runs_high_then_normal_then_low(redis_url, worker_class):
    connection = connect(redis_url)
    settings = Settings.from_env({"REDIS_URL": redis_url})
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
