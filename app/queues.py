"""Queue management: each task queue's depth, workers and throughput; pause, resume and empty one queue.

A pause is per queue (RQ's `rq suspend` is global) and is kept in Redis, so every
API process and worker sees it: workers finish what they run and take nothing more
from the queue, within PAUSE_CHECK_S for an idle one (core/storage/paused.py).
Emptying drops a queue's queued tasks: each one's keys are deleted as a purge
deletes them; a queued workflow step is canceled instead (REVOKED, with the steps
that wait on it, as a cancel of that step does), so its workflow ends FAILURE
rather than waiting for ever.
"""

from __future__ import annotations

import json
import time
from contextlib import suppress
from typing import Any

import redis

from app import cancel
from app.errors import QueueNotFound, TaskFinished, TaskNotFound
from core.connection import redis_errors
from core.model import QUEUE_ORDER
from core.settings import Settings
from core.storage import paused
from core.storage.emptying import take_queued
from core.storage.overview import queue_overview
from core.storage.queues import queue_named
from core.storage.records import delete_jobs, read_fields


def checked_queue(name: str) -> str:
    """Return `name` if it is a task queue's; else raise a 404 naming the known ones."""
    if name not in QUEUE_ORDER:
        raise QueueNotFound(f"unknown queue {name!r}; known: {', '.join(QUEUE_ORDER)}")
    return name


def overview(connection: redis.Redis, settings: Settings) -> dict[str, Any]:
    """Return GET /api/queues: every task queue, highest priority first (core/storage/overview.py)."""
    with redis_errors():
        return {"queues": queue_overview(connection, settings.result_ttl_s, time.time())}


def set_paused(connection: redis.Redis, name: str, pause: bool) -> dict[str, Any]:
    """Pause or resume the queue `name` (idempotent); return {"queue", "paused"}."""
    name = checked_queue(name)
    with redis_errors():
        (paused.pause if pause else paused.resume)(connection, name)
    return {"queue": name, "paused": pause}


def empty(connection: redis.Redis, settings: Settings, name: str) -> dict[str, Any]:
    """Drop every queued task of the queue `name`; return {"queue", "removed", "workflow_steps_revoked"}.

    `removed` counts every task taken off the queue, the revoked workflow steps included. Delayed
    (scheduled) tasks, retry back-offs and running tasks are not queued and stay.
    """
    name = checked_queue(name)
    with redis_errors():
        job_ids = take_queued(connection, queue_named(connection, name))
        steps = [
            job_id
            for job_id, (meta,) in zip(job_ids, read_fields(connection, job_ids, ("meta",)), strict=True)
            if meta and json.loads(meta).get("workflow_id")
        ]
        for step in steps:
            # TaskFinished: canceled with an earlier step of its workflow, or ended meanwhile
            with suppress(TaskFinished, TaskNotFound):
                cancel.cancel(connection, settings, step)
        step_ids = set(steps)
        delete_jobs(connection, [job_id for job_id in job_ids if job_id not in step_ids])
    return {"queue": name, "removed": len(job_ids), "workflow_steps_revoked": len(steps)}
