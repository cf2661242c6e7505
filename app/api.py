"""The HTTP views: each validates its input, makes one call into the domain and returns JSON."""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify

from app import cancel, idempotency, listing, purge, schedules, tasks, workflows
from app.openapi import APIBlueprint, Tag
from app.schemas import (
    API_KEY,
    IDEMPOTENT_SUBMIT,
    CreateSchedule,
    IdempotencyHeader,
    ListQuery,
    SchedulePath,
    SubmitTask,
    SubmitWorkflow,
    TaskPath,
    WorkflowListQuery,
    WorkflowPath,
    documented,
    retention_body,
)
from core import registry
from core.connection import redis_errors
from core.storage.queues import queue_depths, worker_count

tasks_tag = Tag(name="tasks", description="Submit, inspect, list and purge tasks")
schedules_tag = Tag(name="schedules", description="Periodic tasks (interval or cron), fired by rq-scheduler")
workflows_tag = Tag(name="workflows", description="DAGs of steps whose results feed the next ones")
ops_tag = Tag(name="operations", description="Health and the registered task types")
api = APIBlueprint("api", __name__, url_prefix="/api")
BODY = (413, 415)
"""What a POST may also answer: a body over MAX_BODY_BYTES, or one that is not JSON."""
CANCEL_RESPONSES = documented({200: "TaskCanceled", 202: "TaskCanceled"}, *BODY, 404, 409, 503)


def _state() -> Any:
    return current_app.extensions["taskrelay"]


SUBMIT_ERRORS = (*BODY, 409, 422, 503)
"""A submit's errors: the body's, an Idempotency-Key in flight (409) or reused (422), Redis or RabbitMQ down."""


@api.post(
    "/tasks",
    tags=[tasks_tag],
    responses=documented({202: "TaskSubmitted"}, *SUBMIT_ERRORS, models=IDEMPOTENT_SUBMIT),
    security=API_KEY,
)
def submit_task(body: SubmitTask, header: IdempotencyHeader) -> Any:
    """Submit a task: it is queued on its priority's queue and answered with its id."""
    return jsonify(tasks.submit(_state().ingress, body, idempotency.new_id)), 202


@api.get("/tasks/<task_id>", tags=[tasks_tag], responses=documented({200: "TaskStatus"}, 404, 503), security=API_KEY)
def get_task(path: TaskPath) -> Any:
    """Return a task's state, result, attempts, errors and progress; 404 for an unknown id."""
    return jsonify(tasks.status(_state().connection, path.task_id))


@api.get("/tasks", tags=[tasks_tag], responses=documented({200: "TaskList"}, 503), security=API_KEY)
def list_tasks(query: ListQuery) -> Any:
    """List tasks, filtered by state, type, task_type and priority, a page at a time."""
    return jsonify(listing.list_tasks(_state().connection, query))


@api.post("/tasks/<task_id>/cancel", tags=[tasks_tag], responses=CANCEL_RESPONSES, security=API_KEY)
def cancel_task(path: TaskPath) -> Any:
    """Cancel a task in any unfinished state; it ends REVOKED (409 if it already ended, 404 if unknown)."""
    state = _state()
    body, status = cancel.cancel(state.connection, state.settings, path.task_id)
    return jsonify(body), status


@api.post("/tasks/purge", tags=[tasks_tag], responses=documented({200: "Purged"}, *BODY, 503), security=API_KEY)
def purge_tasks() -> Any:
    """Stop running tasks, drop queued and scheduled ones and delete all task history."""
    state = _state()
    return jsonify(purge.purge(state.connection, state.ingress))


@api.post(
    "/workflows",
    tags=[workflows_tag],
    responses=documented({202: "WorkflowSubmitted"}, *SUBMIT_ERRORS, models=IDEMPOTENT_SUBMIT),
    security=API_KEY,
)
def submit_workflow(body: SubmitWorkflow, header: IdempotencyHeader) -> Any:
    """Submit a DAG of steps; answered with the workflow id and every step's task id."""
    state = _state()
    return jsonify(workflows.submit(state.ingress, body, idempotency.new_id)), 202


@api.get(
    "/workflows/<workflow_id>",
    tags=[workflows_tag],
    responses=documented({200: "WorkflowStatus"}, 404, 503),
    security=API_KEY,
)
def get_workflow(path: WorkflowPath) -> Any:
    """Return a workflow's state, progress and every step's state, result, attempts and errors."""
    return jsonify(workflows.status(_state().connection, path.workflow_id))


@api.get("/workflows", tags=[workflows_tag], responses=documented({200: "WorkflowList"}, 503), security=API_KEY)
def list_workflows(query: WorkflowListQuery) -> Any:
    """List workflows, newest first, with their state and progress."""
    state = query.state.value if query.state else None
    return jsonify(workflows.list_workflows(_state().connection, query.limit, query.offset, state))


@api.post(
    "/workflows/<workflow_id>/cancel",
    tags=[workflows_tag],
    responses=documented({200: "WorkflowCanceled"}, *BODY, 404, 503),
    security=API_KEY,
)
def cancel_workflow(path: WorkflowPath) -> Any:
    """Cancel every unfinished step of a workflow; it ends REVOKED."""
    state = _state()
    return jsonify(workflows.cancel(state.connection, state.settings, path.workflow_id))


@api.post("/schedules", tags=[schedules_tag], responses=documented({201: "Schedule"}, *BODY, 503), security=API_KEY)
def create_schedule(body: CreateSchedule) -> Any:
    """Create a periodic task; each run becomes an ordinary task tagged with the schedule id."""
    return jsonify(schedules.create(_state().connection, body)), 201


@api.get("/schedules", tags=[schedules_tag], responses=documented({200: "ScheduleList"}, 503), security=API_KEY)
def list_schedules() -> Any:
    """List the schedules with their next run time."""
    return jsonify(schedules.list_schedules(_state().connection))


@api.delete(
    "/schedules/<schedule_id>",
    tags=[schedules_tag],
    responses=documented({200: "ScheduleDeleted"}, 404, 503),
    security=API_KEY,
)
def delete_schedule(path: SchedulePath) -> Any:
    """Delete a schedule; runs already enqueued are not affected."""
    return jsonify(schedules.delete(_state().connection, path.schedule_id))


@api.get("/task-types", tags=[ops_tag], responses=documented({200: "TaskTypes"}), security=API_KEY)
def task_types() -> Any:
    """List the registered task types with their default retries and timeout."""
    types = []
    for name in registry.names():
        spec = registry.get(name)
        types.append(
            {
                "name": name,
                "description": spec.description,
                "max_retries": spec.max_retries,
                "timeout_s": spec.timeout_s,
                "parameters_schema": spec.params_model.model_json_schema() if spec.params_model else None,
                "retention": retention_body(spec.retention),
            }
        )
    return jsonify({"task_types": types})


@api.get("/health", tags=[ops_tag], responses=documented({200: "Health"}, 503, keyed=False))
def health() -> Any:
    """Report whether Redis answers, the queue depths and how many workers are registered."""
    state = _state()
    connection = state.connection
    with redis_errors():
        connection.ping()
        queues = queue_depths(connection)
        workers = worker_count(connection)
    auth = "on" if state.settings.auth else "off"
    return jsonify({"status": "ok", "redis": "ok", "queues": queues, "workers": workers, "auth": auth})
