"""Per-key rate limits: 429 with Retry-After past the limit, counted per key, shared by API processes."""

from __future__ import annotations

import dataclasses

import pytest

from app import create_app
from app.ratelimit import Limit, Limiter
from core.errors import ConfigError
from core.storage import apikeys

TASK = {"task_type": "test_echo", "parameters": {}}


def limited(settings, fake_redis, limit: str):
    return create_app(dataclasses.replace(settings, rate_limit=limit), fake_redis).test_client()


def test_past_the_limit_is_a_429_with_retry_after(settings, fake_redis):
    client = limited(settings, fake_redis, "5/minute")
    codes = [client.post("/api/tasks", json=TASK).status_code for _ in range(5)]
    assert codes == [202] * 5
    refused = client.get("/api/tasks")
    assert refused.status_code == 429
    assert refused.json["error"] == "rate_limited"
    assert "rate limit of 5/minute for key 'bootstrap' exceeded" in refused.json["message"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert client.get("/api/health").status_code == 200  # probes are not counted


def test_each_key_has_its_own_count(settings, fake_redis):
    client = limited(settings, fake_redis, "2/minute")
    assert [client.get("/api/tasks").status_code for _ in range(3)] == [200, 200, 429]
    client.api_key, _ = apikeys.create(fake_redis, "other", ("read",))
    assert client.get("/api/tasks").status_code == 200


def test_api_processes_share_the_count(settings, fake_redis):
    first, second = limited(settings, fake_redis, "4/minute"), limited(settings, fake_redis, "4/minute")
    codes = [c.get("/api/tasks").status_code for c in (first, second, first, second, first, second)]
    assert codes.count(200) == 4 and codes.count(429) == 2


def test_leases_never_grant_more_than_the_limit_across_processes(fake_redis):
    limit = Limit.parse("100/second")
    assert limit is not None
    limiters = [Limiter(limit) for _ in range(3)]
    now = 1_000_000.25  # one window for the whole test
    allowed = sum(1 for n in range(400) if limiters[n % 3].allow(fake_redis, "k", now) is None)
    assert 100 - 3 * limiters[0].lease_size < allowed <= 100
    assert limiters[0].allow(fake_redis, "k", now + 1) is None  # a new window


@pytest.mark.parametrize("text", ["200/sec", "fast", "0/second", "10/fortnight"])
def test_a_bad_rate_limit_names_the_format(text):
    with pytest.raises(ConfigError, match="RATE_LIMIT must look like 200/second"):
        Limit.parse(text)


@pytest.mark.parametrize("text", ["", "off", "OFF"])
def test_no_limit(text):
    assert Limit.parse(text) is None


def test_with_redis_down_a_limited_submit_is_refused_with_503_and_retry_after_never_let_through(settings):
    import fakeredis

    server = fakeredis.FakeServer()
    client = limited(settings, fakeredis.FakeRedis(server=server), "5/minute")
    server.connected = False
    answer = client.post("/api/tasks", json=TASK)
    assert answer.status_code == 503, answer.json
    assert answer.json["error"] == "service_unavailable"
    assert int(answer.headers["Retry-After"]) >= 1
