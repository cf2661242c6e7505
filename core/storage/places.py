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


STOP_JOBS = "stop-jobs"
"""Taskrelay's command naming several jobs to stop at once (RQ's own workers ignore a command they do not know)."""


def ask_to_stop_all(connection: redis.Redis, worker_name: str, job_ids: list[str]) -> None:
    """Ask `worker_name` to stop every one of `job_ids`, in one round trip.

    First one STOP_JOBS command naming them all: a batch worker drops its unstarted claims among them before it
    interrupts the running one, so none of them starts in between (stop-jobs one by one would race its next
    task). Then RQ's stop-job for each, which RQ's own workers act on (a batch worker finds them done).
    """
    pipe = connection.pipeline(transaction=False)
    if len(job_ids) > 1:
        send_command(pipe, worker_name, STOP_JOBS, job_ids=job_ids)
    for job_id in job_ids:
        send_command(pipe, worker_name, "stop-job", job_id=job_id)
    pipe.execute()
