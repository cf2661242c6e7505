"""The task model: priorities, the RQ queue each one maps to, and one accepted task (`TaskRequest`).

Priority points one way, decided here: workers listen on QUEUE_ORDER, highest
first, so a queued high task always starts before any queued normal or low one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

PRIORITIES = ("high", "normal", "low")
"""Highest first: the order workers listen in."""
QUEUE_NAMES = {priority: f"{priority}_priority" for priority in PRIORITIES}
QUEUE_ORDER = tuple(QUEUE_NAMES[p] for p in PRIORITIES)
PRIORITY_OF_QUEUE = {name: priority for priority, name in QUEUE_NAMES.items()}
SCHEDULES_QUEUE = "taskrelay_schedules"
"""Where rq-scheduler puts a periodic schedule when it is due; its job only creates the real task, so
workers take it before anything else (it costs one enqueue and must not wait behind a backlog)."""


@dataclass(frozen=True)
class TaskRequest:
    """One accepted task, as the enqueue side needs it (the API or the bridge builds it)."""

    task_id: str
    task_type: str
    priority: str
    parameters: dict[str, Any]
    submitted_at: str
    max_retries: int | None = None
    run_at: datetime | None = None
    schedule_id: str | None = None
