"""Direct ingress (no RabbitMQ) against the real Redis: concurrent submits share one MULTI and every task is queued."""

from __future__ import annotations

import pytest
import redis
from rq.job import Job

from app import create_app
from core.storage.queues import SERIALIZER
from tests.helpers import keyed_settings, submit_concurrently

pytestmark = [pytest.mark.redis]

SEED_TASK = {"task_type": "data_processing", "priority": "low", "parameters": {"data": "example data"}}


def test_concurrent_direct_submits_share_transactions_and_all_are_queued(redis_url, real_redis: redis.Redis):
    app = create_app(keyed_settings({"REDIS_URL": redis_url}), real_redis)
    ids, flushes = submit_concurrently(app, SEED_TASK)
    assert len(set(ids)) == 120
    assert sum(flushes) == 120 and len(flushes) < 120
    assert sorted(x.decode() for x in real_redis.lrange("rq:queue:low_priority", 0, -1)) == sorted(ids)
    job = Job.fetch(ids[0], connection=real_redis, serializer=SERIALIZER)
    assert job.get_status() == "queued" and list(job.args) == ["data_processing", {"data": "example data"}]
