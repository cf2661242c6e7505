"""The one place that builds RQ queues: JSON-serialized, and listed highest priority first.

Every job uses RQ's JSONSerializer; nothing a client sends is ever pickled.
Workers listen on `worker_queues()`, in its order (see core.model for which way
priority points).
"""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue, Worker
from rq.job import Job
from rq.serializers import JSONSerializer

from core.model import PRIORITIES, QUEUE_NAMES, SCHEDULES_QUEUE
from core.storage.keys import WORKERS_KEY

SERIALIZER = JSONSerializer


class JSONJob(Job):
    """An RQ Job that always uses the JSON serializer (rq-scheduler 0.14 has no serializer option: `-j` takes this)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = SERIALIZER
        super().__init__(*args, **kwargs)


class JSONWorker(Worker):
    """An RQ Worker that reads jobs with the JSON serializer (rq-dashboard's worker view needs it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = SERIALIZER
        super().__init__(*args, **kwargs)


def get_queue(connection: redis.Redis, priority: str) -> Queue:
    """Return the RQ queue for `priority` (high, normal or low), JSON-serialized."""
    return Queue(QUEUE_NAMES[priority], connection=connection, serializer=SERIALIZER)


def queue_named(connection: redis.Redis, name: str) -> Queue:
    """Return the RQ queue called `name` (a job's origin), JSON-serialized."""
    return Queue(name, connection=connection, serializer=SERIALIZER)


def all_queues(connection: redis.Redis) -> list[Queue]:
    """Return the three task queues, highest priority first."""
    return [get_queue(connection, priority) for priority in PRIORITIES]


def worker_queues(connection: redis.Redis) -> list[Queue]:
    """Return what a worker listens on, in order: due schedules, then high, normal, low."""
    return [Queue(SCHEDULES_QUEUE, connection=connection, serializer=SERIALIZER), *all_queues(connection)]


def queue_depths(connection: redis.Redis) -> dict[str, int]:
    """Return how many tasks wait on each task queue, highest priority first."""
    return {queue.name: queue.count for queue in all_queues(connection)}


def worker_count(connection: redis.Redis) -> int:
    """Return how many RQ workers are registered (alive within their TTL)."""
    return int(connection.scard(WORKERS_KEY))
