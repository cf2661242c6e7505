"""Periodic tasks, worker side: `fire`, what a due schedule runs.

A schedule is an rq-scheduler job (id `schedule-<uuid>`) whose function is
`fire`. rq-scheduler (`rqscheduler -j core.storage.queues.JSONJob`) puts it on the
`taskrelay_schedules` queue each time it is due; a worker runs `fire`, which
enqueues an ordinary task with a fresh id, tagged with the schedule's id. So
every run has its own id, state, result and place in the task list.
"""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from rq import get_current_job

from core.model import TaskRequest
from core.settings import get_settings
from core.storage import metrics
from core.storage.enqueue import enqueue_batch


def fire(schedule_id: str) -> dict[str, str]:
    """Enqueue one run of schedule `schedule_id` as a new task; return its id."""
    job = get_current_job()
    assert job is not None, "fire runs inside an RQ job"
    task = job.meta["task"]
    task_id = str(uuid4())
    request = TaskRequest(
        task_id=task_id,
        task_type=task["task_type"],
        priority=task["priority"],
        parameters=task["parameters"],
        max_retries=task.get("max_retries"),
        submitted_at=datetime.now(UTC).isoformat(),
        schedule_id=schedule_id,
    )
    counted = metrics.Tally.of_submitted([request])  # taskrelay_tasks_submitted_total, in the enqueue's transaction
    enqueue_batch(job.connection, get_settings(), [request], also=counted.write)
    return {"task_id": task_id}
