"""Direct ingress (no RabbitMQ) against the real Redis: concurrent submits share one MULTI and every task is queued."""

from __future__ import annotations

import threading

import pytest
import redis
from rq.job import Job

from app import create_app
from jobs.queues import SERIALIZER, TaskRequest
from jobs.settings import Settings

pytestmark = [pytest.mark.redis]

SEED_TASK = {"task_type": "data_processing", "priority": "low", "parameters": {"data": "example data"}}


def test_concurrent_direct_submits_share_transactions_and_all_are_queued(redis_url, real_redis: redis.Redis):
    app = create_app(Settings.from_env({"REDIS_URL": redis_url}), real_redis)
    ingress = app.extensions["taskrelay"].ingress
    flushes: list[int] = []
    flush = ingress._commits._flush

    def counted(requests: list[TaskRequest]) -> list[BaseException | None]:
        flushes.append(len(requests))
        return flush(requests)

    ingress._commits._flush = counted
    ids: list[str] = []
    start = threading.Barrier(24)

    def submit() -> None:
        client = app.test_client()
        start.wait()
        for _ in range(5):
            answer = client.post("/api/tasks", json=SEED_TASK)
            assert answer.status_code == 202
            ids.append(answer.json["task_id"])

    threads = [threading.Thread(target=submit) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(set(ids)) == 120
    assert sum(flushes) == 120 and len(flushes) < 120
    assert sorted(x.decode() for x in real_redis.lrange("rq:queue:low_priority", 0, -1)) == sorted(ids)
    job = Job.fetch(ids[0], connection=real_redis, serializer=SERIALIZER)
    assert job.get_status() == "queued" and list(job.args) == ["data_processing", {"data": "example data"}]
