"""core.lazy_imports: redis-py's asyncio client, deferred by the Lambda entry point, still works against a real Redis.

tests/unit/test_coldstart.py checks that a cold start does not load it.
"""

from __future__ import annotations

import subprocess
import sys

from tests.processes import ROOT

ASYNC_PING = """
import asyncio, sys
from core.lazy_imports import defer_redis_asyncio
assert defer_redis_asyncio()
import redis
assert "redis.asyncio.client" not in sys.modules
assert not defer_redis_asyncio()  # redis is imported: too late, nothing changes

async def ping():
    client = redis.asyncio.Redis.from_url(sys.argv[1])
    try:
        return await client.ping()
    finally:
        await client.aclose()

print(asyncio.run(ping()), type(sys.modules["redis.asyncio"]).__name__)
"""


def test_the_deferred_redis_asyncio_client_works_when_used(redis_url):
    ran = subprocess.run(
        [sys.executable, "-c", ASYNC_PING, redis_url], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert ran.stdout.split() == ["True", "module"]
