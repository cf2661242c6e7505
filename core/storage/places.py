"""Where RQ keeps the ids of a queue's jobs: its list and six registries, read without building Job objects.

A place is one Redis list or sorted set. The started registry's members are
`job_id:execution_id` (RQ 2.x); `read` returns bare job ids from every place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from rq.command import send_command
from rq.queue import Queue
from rq.utils import parse_composite_key

KINDS = ("started", "queued", "deferred", "scheduled", "finished", "failed", "canceled", "intermediate")
"""RQ's names for the places, in the order places_of returns them (intermediate: popped, not yet started)."""


@dataclass(frozen=True)
class Place:
    """One Redis list or sorted set holding job ids."""

    key: str
    kind: str
    is_list: bool = False
    composite: bool = False

    def read(self, connection: redis.Redis, start: int, stop: int, newest_first: bool = False) -> list[str]:
        """Return the job ids at positions start..stop (inclusive); sorted sets by score, or newest first."""
        raw: Any
        if self.is_list:
            raw = connection.lrange(self.key, start, stop)
        else:
            raw = connection.zrange(self.key, start, stop, desc=newest_first)
        ids: list[str] = [entry.decode() if isinstance(entry, bytes) else entry for entry in raw]
        return [parse_composite_key(i)[0] for i in ids] if self.composite else ids

    def size(self, pipe: Any) -> None:
        """Queue this place's length on `pipe` (LLEN or ZCARD)."""
        (pipe.llen if self.is_list else pipe.zcard)(self.key)


def places_of(queue: Queue) -> dict[str, Place]:
    """Return every place `queue` keeps job ids, by kind (KINDS order)."""
    places = [
        Place(queue.started_job_registry.key, "started", composite=True),
        Place(queue.key, "queued", is_list=True),
        Place(queue.deferred_job_registry.key, "deferred"),
        Place(queue.scheduled_job_registry.key, "scheduled"),
        Place(queue.finished_job_registry.key, "finished"),
        Place(queue.failed_job_registry.key, "failed"),
        Place(queue.canceled_job_registry.key, "canceled"),
        Place(queue.intermediate_queue_key, "intermediate", is_list=True),
    ]
    return {place.kind: place for place in places}


def ask_to_stop(connection: redis.Redis, worker_name: str, job_id: str) -> None:
    """Send `worker_name` RQ's stop-job command for `job_id` (batch workers also drop it from their claim)."""
    send_command(connection, worker_name, "stop-job", job_id=job_id)
