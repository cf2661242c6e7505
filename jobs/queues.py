"""The one place that builds RQ queues: names, priority order, serializer, enqueue.

Priority points one way, decided here: workers listen on QUEUE_ORDER, so a queued
high task always starts before any queued normal or low one. Every job uses RQ's
JSONSerializer; nothing a client sends is ever pickled.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry as RedisRetry
from rq import Callback, Queue, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from jobs.errors import BackendUnavailable
from jobs.registry import TaskType
from jobs.settings import Settings

PRIORITIES = ("high", "normal", "low")
"""Highest first: the order workers listen in."""
QUEUE_NAMES = {priority: f"{priority}_priority" for priority in PRIORITIES}
QUEUE_ORDER = tuple(QUEUE_NAMES[p] for p in PRIORITIES)
PRIORITY_OF_QUEUE = {name: priority for priority, name in QUEUE_NAMES.items()}
RUNNER = "jobs.runner.run"
FAILURE_CALLBACK = "jobs.runner.on_failure"
SERIALIZER = JSONSerializer


REDIS_CONNECT_TIMEOUT_S = 5.0
"""Give up connecting to Redis after this many seconds (each try)."""
REDIS_RETRIES = 3
"""Tries per command on a connection error, with exponential backoff up to 0.5 s."""


def connect(url: str, socket_timeout_s: float | None = None) -> redis.Redis:
    """Return a Redis client for `url` that retries connection errors a bounded number of times.

    Workers pass no socket timeout: they block on BLPOP for minutes by design.
    """
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=REDIS_CONNECT_TIMEOUT_S,
        socket_timeout=socket_timeout_s,
        health_check_interval=30,
        retry=RedisRetry(ExponentialBackoff(cap=0.5, base=0.05), REDIS_RETRIES),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )


@contextmanager
def redis_errors() -> Iterator[None]:
    """Turn Redis connection failures (after the client's own retries) into BackendUnavailable."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise BackendUnavailable(f"Redis is not answering ({exc.__class__.__name__})") from exc


def get_queue(connection: redis.Redis, priority: str) -> Queue:
    """Return the RQ queue for `priority` (high, normal or low), JSON-serialized."""
    return Queue(QUEUE_NAMES[priority], connection=connection, serializer=SERIALIZER)


def all_queues(connection: redis.Redis) -> list[Queue]:
    """Return the three queues in the order workers listen on them, highest first."""
    return [get_queue(connection, priority) for priority in PRIORITIES]


def backoff_intervals(max_retries: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> list[int]:
    """Return the wait before each retry in whole seconds: base * 2**n with +-50% jitter, capped.

    Jitter is drawn once at submission, so the schedule is stored with the job
    and visible; it spreads retries of tasks that failed together.
    """
    rng = rng or random.Random()
    delays = []
    for attempt in range(max_retries):
        delay = min(cap_s, base_s * 2**attempt) * rng.uniform(0.5, 1.5)
        delays.append(max(0, round(delay)) if base_s > 0 else 0)
    return delays


def enqueue_task(
    connection: redis.Redis,
    settings: Settings,
    *,
    task_id: str,
    task_type: TaskType,
    priority: str,
    parameters: dict[str, Any],
    max_retries: int | None = None,
    run_at: datetime | None = None,
    submitted_at: str,
) -> Job:
    """Put one task on its priority queue (or in the scheduled registry when `run_at` is set)."""
    retries = task_type.max_retries if max_retries is None else max_retries
    queue = get_queue(connection, priority)
    options: dict[str, Any] = {
        "job_id": task_id,
        "description": task_type.name,
        "job_timeout": task_type.timeout_s,
        "result_ttl": settings.result_ttl_s,
        "failure_ttl": settings.failure_ttl_s,
        "on_failure": Callback(FAILURE_CALLBACK),
        "meta": {
            "task_type": task_type.name,
            "priority": priority,
            "max_retries": retries,
            "attempts": 0,
            "errors": [],
            "submitted_at": submitted_at,
        },
    }
    if retries > 0:
        options["retry"] = Retry(
            max=retries, interval=backoff_intervals(retries, settings.retry_base_s, settings.retry_max_s)
        )
    if run_at is not None:
        return queue.enqueue_at(run_at, RUNNER, task_type.name, parameters, **options)
    return queue.enqueue(RUNNER, task_type.name, parameters, **options)
