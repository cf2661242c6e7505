"""Shared fixtures: fakeredis + in-process workers for unit tests, real services for integration tests.

A test that needs Redis or RabbitMQ and cannot reach it is skipped with the
reason on a laptop, and fails when CI=true. Each real-Redis test gets a Redis
database of its own, flushed before and after it.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import fakeredis
import pytest
import redis
from rq import SimpleWorker

from jobs import registry
from jobs.queues import SERIALIZER, all_queues
from jobs.settings import Settings, get_settings

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379")
FIRST_TEST_DB, LAST_TEST_DB = 1, 15
"""Databases the tests may use; db 0 is left to whoever runs Taskrelay on this Redis."""
IN_CI = os.environ.get("CI", "").lower() == "true"

_next_db = itertools.cycle(range(FIRST_TEST_DB, LAST_TEST_DB + 1))

registry.load(["tests.fixture_tasks"])


def require_service(name: str, url: str) -> None:
    """Skip (fail in CI) unless `url`'s host:port accepts a TCP connection."""
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 0), timeout=2):
            return
    except OSError as exc:
        message = f"{name} is not reachable at {parsed.hostname}:{parsed.port} ({exc}); start it to run this test"
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for tests: no retry back-off, files under tmp_path."""
    return Settings.from_env(
        {
            "RETRY_BASE_S": "0",
            "FILES_DIR": str(tmp_path / "files"),
            "OUTPUT_DIR": str(tmp_path / "output"),
        }
    )


@pytest.fixture(autouse=True)
def _fresh_settings_cache() -> Iterator[None]:
    # The worker side reads get_settings(); tests that change the environment must not leak it.
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    """An empty in-memory Redis for unit tests."""
    return fakeredis.FakeRedis()


@pytest.fixture
def app(settings: Settings, fake_redis: fakeredis.FakeRedis):
    """The API app on fakeredis."""
    from app import create_app

    return create_app(settings, fake_redis)


@pytest.fixture
def client(app):
    """A Flask test client for the API."""
    return app.test_client()


@pytest.fixture
def drain(fake_redis: fakeredis.FakeRedis) -> Callable[[], None]:
    """Run every queued task to completion in this process (SimpleWorker, burst mode)."""

    def run() -> None:
        SimpleWorker(all_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER).work(
            burst=True, logging_level="WARNING"
        )

    return run


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A URL to an empty database of the real Redis, flushed again afterwards."""
    require_service("Redis", REDIS_TEST_URL)
    url = f"{REDIS_TEST_URL.rstrip('/')}/{next(_next_db)}"
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    yield url
    connection.flushdb()
    connection.close()


@pytest.fixture
def real_redis(redis_url: str) -> Iterator[redis.Redis]:
    """A client for the test's own real-Redis database."""
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()
