"""Accepted-task records: written in one round trip per batch, read back, forgotten, and trimmed when stale."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import fakeredis

from core import accepted
from core.model import TaskRequest


def request(task_id: str, priority: str = "high", run_at: datetime | None = None) -> TaskRequest:
    stamp = "2026-01-01T00:00:00+00:00"
    return TaskRequest(task_id, "data_processing", priority, {}, submitted_at=stamp, run_at=run_at)


def test_a_batch_is_one_round_trip_of_one_hset_and_a_zadd_per_queue(fake_redis: fakeredis.FakeRedis, monkeypatch):
    sent: list[list[str]] = []
    pipeline = fake_redis.pipeline

    def recording_pipeline(*args, **kwargs):
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        def recorded_execute(*a, **kw):
            sent.append([command[0][0] for command in pipe.command_stack])
            return execute(*a, **kw)

        pipe.execute = recorded_execute  # type: ignore[method-assign]
        return pipe

    monkeypatch.setattr(fake_redis, "pipeline", recording_pipeline)
    later = datetime(2027, 1, 1, tzinfo=UTC)
    accepted.remember(fake_redis, [request("a"), request("b", "low", run_at=later), request("c")])
    assert sent == [["HSET", "ZADD", "ZADD"]]  # one round trip: one HSET, one ZADD per queue
    assert accepted.get(fake_redis, "b") == {
        "task_type": "data_processing",
        "priority": "low",
        "queue": "low_priority",
        "submitted_at": "2026-01-01T00:00:00+00:00",
        "run_at": later.isoformat(),
    }
    assert fake_redis.zrange(accepted.zset_key("high_priority"), 0, -1) == [b"a", b"c"]
    assert accepted.get(fake_redis, "never") is None


def test_forget_leaves_no_key_behind(fake_redis: fakeredis.FakeRedis):
    batch = [request("a"), request("b", "normal")]
    accepted.remember(fake_redis, batch)
    accepted.forget(fake_redis, batch)
    assert fake_redis.keys("*") == []


def test_trim_drops_only_records_older_than_the_cutoff(fake_redis: fakeredis.FakeRedis):
    accepted.remember(fake_redis, [request("old"), request("new", "low")])
    fake_redis.zadd(accepted.zset_key("high_priority"), {"old": time.time() - 2 * accepted.PENDING_TTL_S})
    assert accepted.trim(fake_redis) == 1
    assert accepted.get(fake_redis, "old") is None
    assert fake_redis.zscore(accepted.zset_key("high_priority"), "old") is None
    assert accepted.get(fake_redis, "new") is not None
    assert accepted.trim(fake_redis) == 0
