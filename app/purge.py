"""Purge all task history: stop running tasks, drop queued and scheduled ones, delete every task key.

Tasks still waiting in the RabbitMQ ingress queue are purged there first.
Each queue's list and registries are first RENAMEd, in one transaction, to
private keys: a task submitted while the purge runs lands in a fresh queue and
survives, and the purge deletes exactly the tasks that existed when it started.
For each of those it deletes the job hash, its dependents/dependencies sets, its
results stream (`job.delete()` alone leaves `rq:results:<id>`) and its execution
records. Keys that are not Taskrelay's (other queues, other apps) are untouched.

Limit: a task that does not stop (code stuck inside a C extension) is waited
for up to PURGE_STOP_WAIT_S and then deleted anyway, and its final status write
may reappear when it finishes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any
from uuid import uuid4

import redis

from app.ingress import Ingress
from core import accepted
from core.connection import redis_errors
from core.storage import retention, workflows
from core.storage.places import Place, ask_to_stop_all, places_of
from core.storage.queues import all_queues
from core.storage.records import delete_jobs, worker_names

COUNTED_AS = {"queued": "reserved", "deferred": "reserved", "scheduled": "scheduled"}
"""Which of the purge document's counts each kind of place adds to."""
PURGE_STOP_WAIT_S = 5.0
"""How long a purge waits for stopped tasks to leave the started registries, in seconds."""


def _stop_running(connection: redis.Redis, started: list[Place]) -> int:
    """Ask each worker to stop the task it runs; return how many were asked."""
    job_ids = [job_id for place in started for job_id in place.read(connection, 0, -1)]
    by_worker: dict[str, list[str]] = {}
    for job_id, worker_name in zip(job_ids, worker_names(connection, job_ids), strict=True):
        if worker_name:
            by_worker.setdefault(worker_name, []).append(job_id)
    for worker_name, ids in by_worker.items():
        ask_to_stop_all(connection, worker_name, ids)  # a batch worker's claims all at once: none starts between
    asked = sum(len(ids) for ids in by_worker.values())
    deadline = time.monotonic() + PURGE_STOP_WAIT_S
    while job_ids and time.monotonic() < deadline:
        pipe = connection.pipeline(transaction=False)
        for place in started:
            pipe.zcard(place.key)
        if not any(pipe.execute()):
            break
        time.sleep(0.05)
    return asked


def _detach(connection: redis.Redis, places: list[Place], token: str) -> list[Place]:
    """Atomically move every existing place to a private key; return the moved places."""
    pipe = connection.pipeline(transaction=False)
    for place in places:
        pipe.exists(place.key)
    present = [place for place, exists in zip(places, pipe.execute(), strict=True) if exists]
    moved = [replace(place, key=f"taskrelay:purge:{token}:{n}") for n, place in enumerate(present)]
    transaction = connection.pipeline(transaction=True)
    for old, new in zip(present, moved, strict=True):
        transaction.rename(old.key, new.key)
    results = transaction.execute(raise_on_error=False)
    return [new for new, result in zip(moved, results, strict=True) if not isinstance(result, Exception)]


def purge(connection: redis.Redis, ingress: Ingress) -> dict[str, Any]:
    """Purge every task of the three queues and the ingress; return the seed's purge document."""
    in_ingress = ingress.purge()
    with redis_errors():
        queues = all_queues(connection)
        places = [place for queue in queues for place in places_of(queue).values()]
        places += [Place(accepted.zset_key(queue.name), "accepted") for queue in queues]
        active = _stop_running(connection, [place for place in places if place.kind == "started"])
        moved = _detach(connection, places, uuid4().hex)
        counts = {"reserved": in_ingress, "scheduled": 0}
        job_ids: set[str] = set()
        for place in moved:
            ids = place.read(connection, 0, -1)
            job_ids.update(ids)
            if kind := COUNTED_AS.get(place.kind):  # accepted ids were counted by the ingress's purge
                counts[kind] += len(ids)
        removed = delete_jobs(connection, sorted(job_ids), also=accepted.forget_ids)
        workflows_removed = workflows.delete_all(connection)
        connection.delete(*(key for _, key in retention.index_keys()))
        if moved:
            connection.delete(*(place.key for place in moved))
            removed += len(moved)
    return {
        "status": "success",
        "message": "All task history has been purged",
        "details": {
            "active_tasks_revoked": active,
            "reserved_tasks_revoked": counts["reserved"],
            "scheduled_tasks_revoked": counts["scheduled"],
            "redis_keys_cleared": removed,
            "workflows_cleared": workflows_removed,
        },
    }
