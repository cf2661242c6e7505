"""Retry an ended task as a new attempt with the same id: POST /api/tasks/{id}/retry.

| the task is                                       | answer                                    |
|---------------------------------------------------|-------------------------------------------|
| FAILURE (failed, or stopped) or REVOKED           | 202: requeued on its own queue            |
| PENDING, RETRY, STARTED or SUCCESS                | 409 `task_not_retryable`, with its state  |
| a workflow's step (a map's element too)           | 409: submit the workflow again            |
| unknown                                           | 404                                       |

A workflow step's outcome already decided the steps after it (released or
canceled them), so running it alone again could not make the workflow whole.

The requeued task keeps its meta: its attempts count goes on and its earlier
errors stay in `errors`, so it reads RETRY (retrying) until it runs. It gets
the retries it had left (none for a task that failed for good), so one more
failure is final and notifies again.
"""

from __future__ import annotations

from typing import Any

import redis

from app.errors import TaskNotFound, TaskNotRetryable
from app.states import state_of
from core import accepted
from core.connection import redis_errors
from core.model import priority_of
from core.storage import metrics
from core.storage.queues import queue_named
from core.storage.records import fetch_job
from core.storage.requeue import requeue

RETRYABLE = ("FAILURE", "REVOKED")


def retry(connection: redis.Redis, task_id: str) -> dict[str, Any]:
    """Requeue `task_id` if it ended FAILURE or REVOKED; return the 202 body (see the module's table)."""
    with redis_errors():
        job = fetch_job(connection, task_id)
        if job is None:
            if accepted.get(connection, task_id) is None:
                raise TaskNotFound(f"no task with id {task_id!r}; it was never submitted or has expired")
            raise TaskNotRetryable(
                f"task {task_id} is PENDING in the ingress; only {' or '.join(RETRYABLE)} tasks can be retried",
                "PENDING",
            )
        meta = job.meta or {}
        if meta.get("workflow_id"):
            state, _ = state_of(job.get_status(refresh=False), meta)
            message = (
                f"task {task_id} is a step of workflow {meta['workflow_id']}; a step cannot be retried alone "
                "(its outcome already decided the steps after it): submit the workflow again"
            )
            raise TaskNotRetryable(message, state)
        priority = priority_of(meta, job.origin) or job.origin
        counted = (metrics.task_type_of(job), priority)  # a new attempt: submitted again, as it will finish again
        outcome = requeue(connection, queue_named(connection, job.origin), task_id, count_as=counted)
        if outcome == "missing":
            raise TaskNotFound(f"no task with id {task_id!r}; it was purged meanwhile")
        if outcome != "requeued":
            state, _ = state_of(outcome, meta)
            raise TaskNotRetryable(
                f"task {task_id} is {state}; only {' or '.join(RETRYABLE)} tasks can be retried", state
            )
    state, word = state_of("queued", meta)  # the requeue leaves meta as it was
    return {"task_id": task_id, "state": state, "status": word, "message": "Task has been queued for a new attempt"}
