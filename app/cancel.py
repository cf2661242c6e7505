"""Cancel one task, whatever unfinished state it is in: POST /api/tasks/{id}/cancel.

| where the task is                      | what happens                                    | answer           |
|----------------------------------------|-------------------------------------------------|------------------|
| accepted, still in the RabbitMQ ingress | its job is created canceled; the bridge skips it | 200 REVOKED      |
| queued, scheduled, retrying, deferred  | taken off its queue or registry atomically      | 200 REVOKED      |
| running on a batch worker (default)    | interrupted like a timeout (SIGALRM)            | 200 REVOKED      |
| running on a fork worker               | RQ kills its work horse                         | 200 REVOKED      |
| running on a simple worker             | interrupted like a timeout; RQ marks it stopped | 200 REVOKED      |
| running, and it did not stop in time   | stop requested                                  | 202 STARTED      |
| finished, failed or already revoked    | nothing                                         | 409, its state   |

A running task is waited for up to CANCEL_WAIT_S. A revoked task is never retried and fires no failure notification.
"""

from __future__ import annotations

import time
from contextlib import suppress
from typing import Any

import redis

from app.errors import TaskFinished, TaskNotFound
from app.states import state_of
from core import accepted
from core.connection import redis_errors
from core.settings import Settings
from core.storage import maps
from core.storage.cancel import cancel_accepted, cancel_waiting, cancel_waiting_many, settle_stopped_many
from core.storage.keys import ORIGIN_FIELD
from core.storage.places import ask_to_stop_all
from core.storage.queues import queue_named
from core.storage.records import fetch_job, read_fields, worker_names
from core.storage.workflows import cancel_descendants

CANCEL_WAIT_S = 2.5
"""How long the API waits for a running task to stop before answering 202, in seconds."""
POLL_S = 0.05


def _revoked(task_id: str) -> dict[str, Any]:
    return {"task_id": task_id, "state": "REVOKED", "status": "revoked", "message": "Task has been revoked"}


def cancel(
    connection: redis.Redis, settings: Settings, task_id: str, cascade: bool = True
) -> tuple[dict[str, Any], int]:
    """Cancel `task_id`; return the JSON body and the HTTP status (see the module's table).

    A workflow step's descendants are canceled with it (`cascade`); so is the rest of a map step when one of
    its element (or spawner) jobs is canceled: the step can no longer succeed whole.
    """
    with redis_errors():
        job = fetch_job(connection, task_id)
        if job is None:
            record = accepted.get(connection, task_id)
            if record is None:
                raise TaskNotFound(f"no task with id {task_id!r}; it was never submitted or has expired")
            if cancel_accepted(connection, settings, task_id, record):
                return _revoked(task_id), 200
            job = fetch_job(connection, task_id)  # the bridge enqueued it meanwhile
            if job is None:
                raise TaskNotFound(f"no task with id {task_id!r}; it was purged meanwhile")
        queue = queue_named(connection, job.origin)
        outcome = cancel_waiting(connection, queue, task_id, job.failure_ttl or settings.failure_ttl_s)
        if outcome == "done":
            if cascade:
                _cascade(connection, settings, task_id, job.meta or {})
            return _revoked(task_id), 200
        if outcome == "missing":
            raise TaskNotFound(f"no task with id {task_id!r}; it was purged meanwhile")
        if outcome == "started":
            outcome = _stop_running(connection, queue, task_id, settings.failure_ttl_s)
            if outcome == "canceled":
                if cascade:
                    _cascade(connection, settings, task_id, job.meta or {})
                return _revoked(task_id), 200
            if outcome == "started":
                body = {"task_id": task_id, "state": "STARTED", "status": "running"}
                body["message"] = f"Stop requested; the task did not stop within {CANCEL_WAIT_S} s"
                return body, 202
    state, _ = state_of(outcome, job.meta or {})
    raise TaskFinished(f"task {task_id} already ended in state {state}; nothing to cancel", state)


def _cascade(connection: redis.Redis, settings: Settings, task_id: str, meta: dict[str, Any]) -> None:
    """A canceled workflow step's descendants can no longer run: cancel them too (and a map step's jobs)."""
    if not meta.get("workflow_id"):
        return
    if meta.get("map_of"):  # one element, or the spawner: cancel the map step itself, which cascades
        with suppress(TaskFinished, TaskNotFound):
            cancel(connection, settings, meta["map_of"])
        return
    if meta.get("map_role") == "collect":
        cancel_jobs(connection, settings, maps.unfinished_jobs(connection, task_id))
    cancel_descendants(connection, meta["workflow_id"], meta["step_id"], settings.failure_ttl_s)


def cancel_jobs(connection: redis.Redis, settings: Settings, job_ids: list[str]) -> None:
    """Cancel many jobs, none cascading (a map step's spawner and elements): the waiting ones together, a few
    round trips in all, then the running ones as `cancel` does, but together (one stop request per worker, then
    one wait for them all). Jobs that ended or are gone are left as they are."""
    with redis_errors():
        fields = read_fields(connection, job_ids, (ORIGIN_FIELD, "failure_ttl"))
        found = [
            (job_id, queue_named(connection, origin.decode()), int(ttl or 0) or settings.failure_ttl_s)
            for job_id, (origin, ttl) in zip(job_ids, fields, strict=True)
            if origin
        ]
        outcomes = cancel_waiting_many(connection, found)
    running = [
        (job_id, queue) for (job_id, queue, _), outcome in zip(found, outcomes, strict=True) if outcome == "started"
    ]
    if running:
        with redis_errors():
            _stop_running_many(connection, running, settings.failure_ttl_s)


def _stop_running(connection: redis.Redis, queue: Any, task_id: str, failure_ttl_s: int) -> str:
    """Ask the task's worker to stop it; wait up to CANCEL_WAIT_S for it to end; return the status it ends with."""
    (status,) = _stop_running_many(connection, [(task_id, queue)], failure_ttl_s)
    return status


def _stop_running_many(connection: redis.Redis, jobs: list[tuple[str, Any]], failure_ttl_s: int) -> list[str]:
    """Ask the workers of `jobs` (job id, its queue) to stop them, one request per worker (a batch worker then
    drops its unstarted claims among them before it interrupts the running one); wait up to CANCEL_WAIT_S for
    them all to end; return the status each ends with, in order."""
    by_worker: dict[str, list[str]] = {}
    for (job_id, _), name in zip(jobs, worker_names(connection, [job_id for job_id, _ in jobs]), strict=True):
        if name:
            by_worker.setdefault(name, []).append(job_id)
    for name, job_ids in by_worker.items():
        ask_to_stop_all(connection, name, job_ids)
    deadline = time.monotonic() + CANCEL_WAIT_S
    status = dict.fromkeys((job_id for job_id, _ in jobs), "started")
    while True:
        pending = [(job_id, queue) for job_id, queue in jobs if status[job_id] == "started"]
        status.update(
            zip((job_id for job_id, _ in pending), settle_stopped_many(connection, pending, failure_ttl_s), strict=True)
        )
        if "started" not in status.values() or time.monotonic() > deadline:
            return [status[job_id] for job_id, _ in jobs]
        time.sleep(POLL_S)
