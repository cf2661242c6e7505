"""The Redis client every process uses, and the one place Redis's exceptions become Taskrelay's.

Callers never catch `redis.exceptions.*`: they run Redis calls inside
`redis_errors()` and catch BackendUnavailable (Redis did not answer, after the
client's bounded retries, or it is full: BackendFull) or StorageError (Redis
answered with another error).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as RedisRetry

from core.errors import BackendFull, BackendUnavailable, StorageError

REDIS_CONNECT_TIMEOUT_S = 5.0
"""Give up connecting to Redis after this many seconds (each try)."""
REDIS_RETRIES = 3
"""Tries per command on a connection error, with exponential backoff up to 0.5 s."""
API_SOCKET_TIMEOUT_S = 10.0
"""Longest the API and the bridge wait on one Redis reply, in seconds (workers block on BLPOP and set none).

A timeout is not retried: the command may have run, and a Redis that stopped answering (frozen, or cut off
without a reset) would otherwise hold each request for 4 x 10 s, past API Gateway's 29 s."""


RETRIED_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    # READONLY: this connection reaches a replica, as the old primary becomes one in a failover (Sentinel,
    # ElastiCache): the retry reconnects first, so a moved endpoint (DNS) leads to the new primary.
    redis.exceptions.ReadOnlyError,
    redis.exceptions.MasterDownError,  # a replica that lost its primary (replica-serve-stale-data no)
)
"""What the client retries, reconnecting first. Not a TimeoutError (redis-py's Retry retries one by default):
see API_SOCKET_TIMEOUT_S."""


def connect(url: str, socket_timeout_s: float | None = None) -> redis.Redis:
    """Return a Redis client for `url` that retries connection errors and READONLY replies a bounded number of
    times, reconnecting before each try. A timeout (no reply within `socket_timeout_s`) is not retried.

    Workers pass no socket timeout: they block on BLPOP for minutes by design.
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=socket_timeout_s,
        health_check_interval=30,
        retry=RedisRetry(ExponentialBackoff(cap=0.5, base=0.05), REDIS_RETRIES, supported_errors=RETRIED_ERRORS),
        retry_on_error=list(RETRIED_ERRORS),
    )


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn Redis failures into BackendUnavailable (no answer; a READONLY reply: a replica; a BUSY one: a script
    running too long), BackendFull (an OOM reply: a write refused at `maxmemory`) or StorageError (another error
    reply).

    redis-py raises an OOM reply as OutOfMemoryError from a command, a pipeline (the first failed command's
    error) and a script alike."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise BackendUnavailable(f"Redis is not answering ({exc.__class__.__name__})") from exc
    except redis.exceptions.OutOfMemoryError as exc:
        raise BackendFull("Redis is full (it refuses writes at its maxmemory)") from exc
    except (redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError) as exc:
        raise BackendUnavailable("Redis is read-only (a replica: a failover under way?)") from exc
    except redis.exceptions.RedisError as exc:
        if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith("BUSY "):
            # a script has run past busy-reply-threshold; Redis answers every other command so meanwhile
            raise BackendUnavailable("Redis is busy running a script") from exc
        raise StorageError(f"Redis refused a command: {exc}") from exc


def eviction_warning(connection: redis.Redis) -> str | None:
    """Return a warning if this Redis may evict keys (a `maxmemory-policy` other than noeviction), else None.

    An evicting Redis deletes queued jobs and results to make room, silently. Read from INFO (allowed where
    CONFIG is not, as on ElastiCache); None too if Redis cannot be asked now. BullMQ warns the same way."""
    try:
        with redis_errors():
            policy = connection.info("memory").get("maxmemory_policy")
    except (BackendUnavailable, StorageError):
        return None
    if policy is None or policy == "noeviction":
        return None
    return (
        f"Redis's maxmemory-policy is {policy}: when it reaches its maxmemory it deletes keys, queued tasks and "
        "their results among them; set maxmemory-policy noeviction"
    )


def answers_ping(url: str, timeout_s: float = 1.0) -> bool:
    """Return whether the Redis at `url` answers PING within `timeout_s` (one try, no retries)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        with redis_errors():
            return bool(client.ping())
    except (BackendUnavailable, StorageError):
        return False
    finally:
        client.close()
