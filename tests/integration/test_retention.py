"""Retention per submit against the real Redis and a real worker process: each job's age is its TTL, and the
worker's maintenance pass trims a task type's history to the submitted count, oldest first."""

from __future__ import annotations

import pytest

from app import create_app
from core.storage.keys import job_key
from tests.helpers import keyed_settings, submit, wait_until
from tests.processes import spawn_worker, stop_worker

pytestmark = pytest.mark.redis


@pytest.mark.parametrize("worker_class", ["batch", "simple"])
def test_a_worker_keeps_the_submitted_age_and_count(redis_url, real_redis, worker_class):
    client = create_app(keyed_settings({"REDIS_URL": redis_url}), real_redis).test_client()
    kept = {"success": {"age_seconds": 120, "count": 2}, "failure": {"count": 1}}
    done = [submit(client, "test_echo", retention=kept) for _ in range(5)]
    failed = [submit(client, "test_bad_input", retention=kept) for _ in range(3)]
    plain = submit(client, "test_echo")
    worker = spawn_worker(redis_url, WORKER_CLASS=worker_class)  # maintenance every second
    try:

        def codes() -> list[int] | None:
            found = [client.get(f"/api/tasks/{i}").status_code for i in (*done, *failed, plain)]
            return found if found == [404] * 3 + [200] * 2 + [404] * 2 + [200] * 2 else None

        wait_until(codes, what="the oldest tasks beyond the counts trimmed")
    finally:
        stop_worker(worker)
    assert 0 < real_redis.ttl(job_key(done[-1])) <= 120
    assert real_redis.ttl(job_key(plain)) > 120  # the environment's 7 days
