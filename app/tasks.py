"""Submit tasks and read their status: the calls the API views make into RQ."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from pydantic import ValidationError

from app.errors import TaskNotFound, invalid_request
from app.ingress import Ingress
from app.schemas import SubmitTask, retention_of
from app.states import state_of
from core import accepted, registry
from core.connection import redis_errors
from core.model import QUEUE_NAMES, TaskRequest, priority_of
from core.registry import TaskType
from core.storage.records import Job, fetch_job

SUBMITTED_MESSAGE = "Task has been submitted successfully"


def iso(moment: datetime | str | None) -> str | None:
    """Return an ISO 8601 UTC string for `moment`: a datetime, or a timestamp as RQ stores it in a job hash."""
    if not moment:
        return None
    if isinstance(moment, str):
        # RQ writes '%Y-%m-%dT%H:%M:%S.%fZ'; rewriting the text is 20x cheaper than strptime, same result.
        stamp = moment.removesuffix("Z").removesuffix(".000000")
        return stamp + "+00:00"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.isoformat()


def checked_task_type(task_type: str, parameters: dict[str, Any]) -> TaskType:
    """Return the registered task type, after checking `parameters` against its model (400s name the field)."""
    spec = registry.get(task_type)
    if spec.params_model is not None:
        try:
            registry.built(spec.params_model).model_validate(parameters)
        except ValidationError as exc:
            raise invalid_request(exc, prefix="parameters") from None
    return spec


def submit(ingress: Ingress, request: SubmitTask, new_id: Callable[[str], str]) -> dict[str, Any]:
    """Validate `request` against the task registry and hand it to the ingress; return the 202 body.

    `new_id("task")` gives the task's id (app.idempotency.new_id: random, or fixed by an Idempotency-Key).
    """
    spec = checked_task_type(request.task_type, request.parameters)
    now = datetime.now(UTC)
    run_at = request.run_at
    if run_at is not None and run_at.tzinfo is None:
        run_at = run_at.replace(tzinfo=UTC)
    if request.delay_seconds:
        run_at = now + timedelta(seconds=request.delay_seconds)
    priority = request.priority.value
    task_id = new_id("task")
    ingress.submit(
        TaskRequest(
            task_id=task_id,
            task_type=spec.name,
            priority=priority,
            parameters=request.parameters,
            max_retries=request.max_retries,
            run_at=run_at,
            retention=retention_of(request.retention),
            submitted_at=now.isoformat(),
        )
    )
    return {
        "task_id": task_id,
        "status": "submitted",
        "message": SUBMITTED_MESSAGE,
        "queue": QUEUE_NAMES[priority],
    }


def accepted_summary(task_id: str, record: dict[str, str]) -> dict[str, Any]:
    """Return the list entry of a task still in the RabbitMQ ingress (not yet an RQ job)."""
    return {
        "task_id": task_id,
        "state": "PENDING",
        "status": "accepted",
        "task_type": record.get("task_type"),
        "priority": record.get("priority"),
        "queue": record.get("queue"),
        "created_at": record.get("submitted_at"),
        "started_at": None,
        "ended_at": None,
        "attempts": 0,
        "error": None,
    }


def accepted_status(task_id: str, record: dict[str, str]) -> dict[str, Any]:
    """Return the status document of a task still in the RabbitMQ ingress."""
    summary = accepted_summary(task_id, record)
    detail = {
        "priority": summary["priority"],
        "result": None,
        "status": "accepted",
        "task_type": summary["task_type"],
        "queue": summary["queue"],
        "created_at": summary["created_at"],
        "scheduled_for": record.get("run_at") or None,
        "attempts": 0,
        "errors": [],
        "error": None,
        "progress": None,
    }
    return {"task_id": task_id, "state": "PENDING", "status": detail}


def _summary(
    task_id: str, rq_status: str | None, meta: dict[str, Any], description: str | None, origin: str, times: list
) -> dict[str, Any]:
    state, word = state_of(rq_status, meta)
    errors = meta.get("errors") or []
    created_at, started_at, ended_at = times
    return {
        "task_id": task_id,
        "state": state,
        "status": word,
        "task_type": meta.get("task_type") or description,
        "priority": priority_of(meta, origin),
        "queue": origin,
        "created_at": iso(created_at),
        "started_at": iso(started_at),
        "ended_at": iso(ended_at),
        "attempts": meta.get("attempts", 0),
        "error": _public_error(errors[-1]) if state == "FAILURE" and errors else None,
        "schedule_id": meta.get("schedule_id"),
    }


def summarize(job: Job) -> dict[str, Any]:
    """Return the list entry for `job`: identity, state and times, without the result."""
    times = [job.created_at, job.started_at, job.ended_at]
    return _summary(job.id, job.get_status(refresh=False), job.meta or {}, job.description, job.origin, times)


def summarize_fields(task_id: str, values: list[bytes | None]) -> dict[str, Any] | None:
    """Return the list entry from the job hash's fields (core.storage.keys.SUMMARY_FIELDS), or None if it is gone."""
    if all(value is None for value in values):
        return None
    status, meta, description, origin, *times = (v.decode() if v is not None else None for v in values)
    return _summary(task_id, status, json.loads(meta) if meta else {}, description, origin or "", times)


def _public_error(error: dict[str, Any]) -> dict[str, Any]:
    return {"type": error.get("type"), "message": error.get("message")}


def status(connection: redis.Redis, task_id: str) -> dict[str, Any]:
    """Return the seed's `{state, status: {...}}` document for one task, or raise TaskNotFound."""
    with redis_errors():
        job = fetch_job(connection, task_id)
        if job is None:
            record = accepted.get(connection, task_id)
            if record is None:
                raise TaskNotFound(f"no task with id {task_id!r}; it was never submitted or has expired") from None
            return accepted_status(task_id, record)
        summary = summarize(job)
        result = job.return_value(refresh=True) if summary["state"] == "SUCCESS" else None
    meta = job.meta or {}
    errors = meta.get("errors") or []
    detail = {
        "priority": summary["priority"],
        "result": result,
        "status": summary["status"],
        "task_type": summary["task_type"],
        "queue": job.origin,
        "created_at": summary["created_at"],
        "enqueued_at": iso(job.enqueued_at),
        "started_at": summary["started_at"],
        "ended_at": summary["ended_at"],
        "attempts": summary["attempts"],
        "max_retries": meta.get("max_retries"),
        "retries_left": job.retries_left,
        "errors": errors,
        "error": summary["error"],
        "progress": meta.get("progress"),
        "schedule_id": summary["schedule_id"],
        "workflow_id": meta.get("workflow_id"),
        "step_id": meta.get("step_id"),
        **({"map_index": meta["map_index"]} if meta.get("map_index") is not None else {}),
    }
    return {"task_id": job.id, "state": summary["state"], "status": detail}
