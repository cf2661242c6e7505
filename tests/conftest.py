"""Shared fixtures: fakeredis + in-process workers for unit tests, real services for integration tests.

A test that needs Redis or RabbitMQ and cannot reach it is skipped with the
reason on a laptop, and fails when CI=true. Each real-Redis test gets a Redis
database of its own, flushed before and after it, and locked (a file lock per
database) so that two test runs on one machine never share one.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import fakeredis
import pytest
import redis
from flask import Flask

from core import registry
from core.settings import Settings, get_settings
from core.storage.queues import SERIALIZER, worker_queues
from jobs.batch_worker import BatchWorker
from tests.helpers import KeyedClient, keyed_settings

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379")
RABBITMQ_TEST_URL = os.environ.get("RABBITMQ_TEST_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
FIRST_TEST_DB, LAST_TEST_DB = 1, 15
"""Databases the tests may use; db 0 is left to whoever runs Taskrelay on this Redis."""
IN_CI = os.environ.get("CI", "").lower() == "true"

_next_db = itertools.cycle(range(FIRST_TEST_DB, LAST_TEST_DB + 1))

registry.load(["tests.fixture_tasks"])
Flask.test_client_class = KeyedClient  # every test client sends TEST_API_KEY unless the test says otherwise


def require_tool(tool: str, needed_for: str) -> str:
    """Return the path of the program `tool`; skip (fail in CI, where .ci/run installs it) if it is not installed.

    `needed_for` says what the test does with it, for the message."""
    path = shutil.which(tool)
    if path is not None:
        return path
    message = f"{tool} is not installed (.ci/run installs it); {needed_for}"
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(message)


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
    """Settings for tests: no retry back-off, files under tmp_path, TEST_API_KEY as the bootstrap key."""
    return keyed_settings(
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
    """Run every queued task to completion in this process: the default (batch) worker in burst mode."""

    def run() -> None:
        BatchWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER).work(
            burst=True, logging_level="WARNING"
        )

    return run


@contextmanager
def claimed_db() -> Iterator[int]:
    """Hold an exclusive file lock on one test database, so test runs sharing this Redis never share a db."""
    for _ in range(LAST_TEST_DB - FIRST_TEST_DB + 1):
        db = next(_next_db)
        lock = open(Path(tempfile.gettempdir()) / f"taskrelay-test-redis-{_redis_port()}-db{db}.lock", "w")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        try:
            yield db
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()
        return
    pytest.fail(f"every test database {FIRST_TEST_DB}-{LAST_TEST_DB} is in use by other test runs")


def _redis_port() -> int:
    return urlparse(REDIS_TEST_URL).port or 6379


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A URL to an empty database of the real Redis, held by this test alone, flushed again afterwards."""
    require_service("Redis", REDIS_TEST_URL)
    with claimed_db() as db:
        url = f"{REDIS_TEST_URL.rstrip('/')}/{db}"
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


@pytest.fixture
def rabbitmq_url() -> str:
    """The real RabbitMQ's URL (skipped on a laptop without it, failed in CI)."""
    require_service("RabbitMQ", RABBITMQ_TEST_URL)
    return RABBITMQ_TEST_URL


@pytest.fixture
def ingress_queue(rabbitmq_url: str) -> Iterator[str]:
    """A fresh ingress queue name for this test; its queues and exchanges are deleted afterwards."""
    import uuid

    import pika

    name = f"taskrelay.test.{uuid.uuid4().hex[:12]}"
    yield name
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    for queue in (name, f"{name}.dead"):
        channel.queue_delete(queue)
    for exchange in (name, f"{name}.dlx"):
        channel.exchange_delete(exchange)
    connection.close()
