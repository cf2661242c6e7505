"""Create, list and delete periodic schedules, stored in and fired by rq-scheduler."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import redis
from crontab import CronTab
from rq_scheduler import Scheduler

from app.errors import InvalidRequest, ScheduleNotFound
from app.schemas import CreateSchedule
from app.tasks import checked_task_type
from core.connection import redis_errors
from core.model import SCHEDULES_QUEUE
from core.storage.queues import JSONJob
from core.storage.records import delete_job

FIRE = "jobs.schedules.fire"
"""The function a due schedule runs in a worker (it enqueues the real task)."""
ID_PREFIX = "schedule-"


def _scheduler(connection: redis.Redis) -> Scheduler:
    return Scheduler(queue_name=SCHEDULES_QUEUE, connection=connection, job_class=JSONJob)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def describe(job: Any, next_run: datetime | None) -> dict[str, Any]:
    """Return the API's view of one schedule."""
    task = job.meta.get("task", {})
    return {
        "schedule_id": job.id,
        "task_type": task.get("task_type"),
        "priority": task.get("priority"),
        "parameters": task.get("parameters"),
        "max_retries": task.get("max_retries"),
        "interval_seconds": job.meta.get("interval"),
        "cron": job.meta.get("cron_string"),
        "repeat": job.meta.get("repeat"),
        "next_run_at": _iso(next_run),
        "created_at": task.get("created_at"),
    }


def create(connection: redis.Redis, request: CreateSchedule) -> dict[str, Any]:
    """Validate and store a schedule; return its description (201)."""
    spec = checked_task_type(request.task_type, request.parameters)
    if request.cron is not None:
        try:
            CronTab(request.cron)
        except ValueError as exc:
            raise InvalidRequest(
                f"cron: not a cron expression ({exc})", [{"field": "cron", "message": str(exc)}]
            ) from None
    schedule_id = f"{ID_PREFIX}{uuid4()}"
    meta = {
        "task": {
            "task_type": spec.name,
            "priority": request.priority.value,
            "parameters": request.parameters,
            "max_retries": request.max_retries,
            "created_at": datetime.now(UTC).isoformat(),
        }
    }
    options: dict[str, Any] = {"id": schedule_id, "description": f"schedule: {spec.name}", "meta": meta}
    with redis_errors():
        scheduler = _scheduler(connection)
        if request.cron is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # crontab's notice about its own future default
                job = scheduler.cron(request.cron, FIRE, args=[schedule_id], repeat=request.repeat, **options)
        else:
            first = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=request.interval_seconds or 0)
            job = scheduler.schedule(
                first, FIRE, args=[schedule_id], interval=request.interval_seconds, repeat=request.repeat, **options
            )
        return describe(job, _next_run(connection, schedule_id))


def _next_run(connection: redis.Redis, schedule_id: str) -> datetime | None:
    score = connection.zscore(Scheduler.scheduled_jobs_key, schedule_id)
    return datetime.fromtimestamp(float(score), UTC) if score is not None else None


def list_schedules(connection: redis.Redis) -> dict[str, Any]:
    """Return every schedule with its next run time."""
    with redis_errors():
        jobs = _scheduler(connection).get_jobs(with_times=True)
        schedules = [describe(job, when) for job, when in jobs if job.id.startswith(ID_PREFIX)]
    return {"schedules": schedules, "total": len(schedules)}


def delete(connection: redis.Redis, schedule_id: str) -> dict[str, Any]:
    """Stop a schedule: no further runs are enqueued (runs already enqueued are left alone)."""
    with redis_errors():
        scheduler = _scheduler(connection)
        if not schedule_id.startswith(ID_PREFIX) or schedule_id not in scheduler:
            raise ScheduleNotFound(f"no schedule with id {schedule_id!r}")
        scheduler.cancel(schedule_id)
        delete_job(connection, schedule_id)
    return {"status": "deleted", "schedule_id": schedule_id}
