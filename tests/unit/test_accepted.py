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


def test_forget_own_drops_a_failed_publishs_records_but_not_a_later_attempts(fake_redis: fakeredis.FakeRedis):
    """An Idempotency-Key retry that took the key over records and publishes the same id; the first attempt's
    publish then fails, and its clean-up must leave the retry's record (the task is on its way)."""
    first = [request("taken"), request("alone", "low")]
    accepted.remember(fake_redis, first)
    retry = TaskRequest("taken", "data_processing", "high", {}, submitted_at="2026-01-01T00:00:09+00:00")
    accepted.remember(fake_redis, [retry])
    accepted.forget_own(fake_redis, first)
    assert accepted.get(fake_redis, "taken") == {
        "task_type": "data_processing",
        "priority": "high",
        "queue": "high_priority",
        "submitted_at": "2026-01-01T00:00:09+00:00",
        "run_at": "",
    }
    assert fake_redis.zrange(accepted.zset_key("high_priority"), 0, -1) == [b"taken"]
    assert accepted.get(fake_redis, "alone") is None  # its own record, nobody else's: gone with its sorted set
    assert fake_redis.zcard(accepted.zset_key("low_priority")) == 0


def test_a_failed_publish_leaves_a_takers_record_and_takes_back_only_its_own_count(fake_redis: fakeredis.FakeRedis):
    from app.ingress import RabbitIngress
    from core.errors import IngressUnavailable
    from core.settings import Settings
    from core.storage import metrics

    settings = Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/%2F"})
    ingress = RabbitIngress(fake_redis, settings)
    first = request("t1")
    taker = TaskRequest("t1", "data_processing", "high", {}, submitted_at="2026-01-01T00:00:09+00:00")

    def publish_many(messages: object) -> list[str | None]:  # the taker records and publishes meanwhile
        accepted.remember(fake_redis, [taker], also=metrics.Tally.of_submitted([taker]).write)
        raise IngressUnavailable("RabbitMQ is not answering")

    ingress.publisher.publish_many = publish_many  # type: ignore[method-assign]
    try:
        ingress._flush([first])
    except IngressUnavailable:
        pass
    else:
        raise AssertionError("the publish failure was swallowed")
    assert (accepted.get(fake_redis, "t1") or {}).get("submitted_at") == "2026-01-01T00:00:09+00:00"
    assert fake_redis.hgetall(metrics.SUBMITTED_KEY) == {b'["data_processing","high"]': b"1"}


def test_after_redis_fails_a_record_the_next_second_of_submits_skips_them_and_then_tries_again():
    from app.ingress import REDIS_PAUSE_S, RabbitIngress
    from core.settings import Settings
    from tests.helpers import PipelineCount, Published

    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    ingress = RabbitIngress(connection, Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}))
    published = Published()
    ingress.publisher.publish_many = published  # type: ignore[method-assign]
    tries = PipelineCount(connection)
    now = [100.0]
    ingress.redis_pause.clock = lambda: now[0]

    server.connected = False
    assert ingress._flush([request("down-1")]) == [None]  # accepted: it waits in RabbitMQ
    assert tries.count == 1
    now[0] += REDIS_PAUSE_S / 2
    assert ingress._flush([request("down-2")]) == [None]
    assert tries.count == 1  # not tried again: that submit did not wait out the client's retries
    server.connected = True
    now[0] += REDIS_PAUSE_S / 2 + 0.01
    assert ingress._flush([request("up-1")]) == [None]
    assert tries.count == 2
    assert published.ids == ["down-1", "down-2", "up-1"]
    assert accepted.get(connection, "up-1") is not None
    assert accepted.get(connection, "down-2") is None
