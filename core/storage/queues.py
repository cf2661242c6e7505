"""The one place that builds RQ queues: JSON-serialized, and listed highest priority first.

Every job uses JSON (RQ's JSONSerializer, written without spaces); nothing a client sends is ever pickled.
Workers listen on `worker_queues()`, in its order (see core.model for which way
priority points).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import redis
import rq.job
import rq.queue
import rq.registry
import rq.results
import rq.serializers
from rq import Queue, Worker
from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.job import Job, JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from core.model import PRIORITIES, QUEUE_NAMES, SCHEDULES_QUEUE
from core.storage.keys import RESULT_FIELD, WORKERS_KEY


class CompactJSONSerializer(JSONSerializer):
    """RQ's JSONSerializer, written without the spaces after `,` and `:`: what every job's meta, data and result
    would otherwise carry in Redis. Anything reading JSON reads it (`rq info -S rq.serializers.JSONSerializer`,
    rq-dashboard, a stock `rq worker`)."""

    @staticmethod
    def dumps(*args: Any, **kwargs: Any) -> bytes:
        kwargs.setdefault("separators", (",", ":"))
        return json.dumps(*args, **kwargs).encode("utf-8")


SERIALIZER = CompactJSONSerializer

RESOLVING_MODULES = (rq.job, rq.queue, rq.registry, rq.results)
"""The RQ 2.12 modules that check a serializer each time they build a Job, Queue, registry or Result."""


def _resolving_ours_at_once(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap RQ's resolve_serializer so that SERIALIZER comes back without its check.

    RQ checks the serializer of every Job, Queue, registry and Result it builds
    with `isinstance(serializer, Serializer)`, a runtime Protocol, which Python
    3.11 answers by walking the protocol's attributes: ~19 µs each time here,
    paid for each claimed job and three times per enqueue. SERIALIZER passes
    that check (tests/unit/test_storage.py); anything else still goes through it.
    """

    def resolve_serializer(serializer: Any = None) -> Any:
        return SERIALIZER if serializer is SERIALIZER else resolve(serializer)

    resolve_serializer.__wrapped__ = resolve  # type: ignore[attr-defined]
    return resolve_serializer


_resolve = _resolving_ours_at_once(rq.serializers.resolve_serializer)
for _module in RESOLVING_MODULES:
    _module.resolve_serializer = _resolve  # type: ignore[attr-defined]


class JSONJob(Job):
    """An RQ Job that always uses the JSON serializer and finds a success's return value in its own hash.

    rq-scheduler 0.14 has no serializer option (`-j` takes this class). The
    batch worker writes a success's return value into the job hash
    (RESULT_FIELD) instead of RQ's results stream: latest_result() returns it
    as an RQ Result, so return_value(), rq-dashboard and the API read it as
    they read RQ's own. A job that RQ's own workers finished has a stream,
    read as RQ reads it.
    """

    _stored_result: bytes | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = SERIALIZER
        super().__init__(*args, **kwargs)

    def restore(self, raw_data: Any) -> Any:
        super().restore(raw_data)
        self._stored_result = raw_data.get(RESULT_FIELD.encode(), raw_data.get(RESULT_FIELD))
        self._cached_result = None

    def latest_result(self, timeout: int = 0) -> Result | None:
        if self._stored_result is None or self._status != JobStatus.FINISHED:
            return super().latest_result(timeout)
        try:
            value = self.serializer.loads(self._stored_result)
        except Exception:  # RQ's restore reads such a value the same way
            value = UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
        ended = self.ended_at or self.created_at
        return Result(
            self.id,
            Result.Type.SUCCESSFUL,
            self.connection,
            id=f"{int(ended.timestamp() * 1000)}-0",  # a Result without an id is falsy
            created_at=ended,
            return_value=value,
            worker_name=self.worker_name or "",
            serializer=self.serializer,
        )


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
