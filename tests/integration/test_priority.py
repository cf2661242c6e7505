"""Priority points one way: with a backlog, every queued high task starts before any normal, and normal before low."""

from __future__ import annotations

import pytest
from rq import SimpleWorker
from rq.job import Job

from app import create_app
from jobs.queues import SERIALIZER, all_queues, connect
from jobs.settings import Settings

pytestmark = pytest.mark.redis


def test_backlog_runs_high_then_normal_then_low(redis_url):
    connection = connect(redis_url)
    client = create_app(Settings.from_env({"REDIS_URL": redis_url}), connection).test_client()

    def submit(priority: str) -> str:
        body = {"task_type": "data_processing", "priority": priority, "parameters": {"data": [1, 2, 3]}}
        response = client.post("/api/tasks", json=body)
        assert response.status_code == 202
        return response.json["task_id"]

    # Lowest first, so arrival order alone would run them the wrong way round.
    submitted = {p: [submit(p) for _ in range(15)] for p in ("low", "normal", "high")}
    SimpleWorker(all_queues(connection), connection=connection, serializer=SERIALIZER).work(
        burst=True, logging_level="WARNING"
    )

    def started(priority: str) -> list:
        jobs = Job.fetch_many(submitted[priority], connection=connection, serializer=SERIALIZER)
        return sorted(job.started_at for job in jobs if job is not None)

    high, normal, low = started("high"), started("normal"), started("low")
    assert len(high) == len(normal) == len(low) == 15
    assert high[-1] < normal[0]
    assert normal[-1] < low[0]
