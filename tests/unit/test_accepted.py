"""Accepted-task records: written in one round trip per batch unless their job exists, read back, forgotten, and
trimmed when stale."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import fakeredis

from core import accepted
from core.model import TaskRequest
from core.storage.keys import job_key


def request(task_id: str, priority: str = "high", run_at: datetime | None = None) -> TaskRequest:
    stamp = "2026-01-01T00:00:00+00:00"
    return TaskRequest(task_id, "data_processing", priority, {}, submitted_at=stamp, run_at=run_at)


def test_a_batch_is_one_round_trip_of_one_script(fake_redis: fakeredis.FakeRedis, monkeypatch):
    accepted.remember(fake_redis, [request("warm-up", "normal")])  # loads the script (redis-py retries a NOSCRIPT)
    sent: list[str] = []
    execute_command = fake_redis.execute_command

    def recording(*args, **kwargs):
        sent.append(str(args[0]))
        return execute_command(*args, **kwargs)

    monkeypatch.setattr(fake_redis, "execute_command", recording)
    later = datetime(2027, 1, 1, tzinfo=UTC)
    accepted.remember(fake_redis, [request("a"), request("b", "low", run_at=later), request("c")])
    assert sent == ["EVALSHA"]  # one round trip: the records' HSET and ZADDs run in one script
    assert accepted.get(fake_redis, "b") == {
        "task_type": "data_processing",
        "priority": "low",
        "queue": "low_priority",
        "submitted_at": "2026-01-01T00:00:00+00:00",
        "run_at": later.isoformat(),
    }
    assert fake_redis.zrange(accepted.zset_key("high_priority"), 0, -1) == [b"a", b"c"]
    assert accepted.get(fake_redis, "never") is None


def test_no_record_is_written_for_a_task_the_bridge_already_moved(fake_redis: fakeredis.FakeRedis):
    fake_redis.hset(job_key("moved"), "status", "queued")  # the bridge created its job before the API recorded it

    def count(pipe) -> None:
        pipe.incr("submitted")

    accepted.remember(fake_redis, [request("moved"), request("fresh", "low"), request("also-fresh")], also=count)
    assert accepted.get(fake_redis, "moved") is None
    assert fake_redis.zscore(accepted.zset_key("high_priority"), "moved") is None
    assert accepted.get(fake_redis, "fresh") is not None
    assert fake_redis.zrange(accepted.zset_key("high_priority"), 0, -1) == [b"also-fresh"]
    assert fake_redis.zrange(accepted.zset_key("low_priority"), 0, -1) == [b"fresh"]
    assert fake_redis.get("submitted") == b"1"  # `also` ran once, whatever was recorded


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
