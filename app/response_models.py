"""The success answers of the HTTP API, as pydantic models: they only describe the bodies, for the OpenAPI spec.

The views build these bodies as dicts (app/tasks.py, app/listing.py...); the
field names are the seed contract's. Fields a body always carries have no
default (required in the spec); fields only some bodies carry default to None.
Extra fields are allowed, so adding one is not a breaking change.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.schemas import Described, RetentionOptions, State, WorkflowState


class TaskSubmitted(Described):
    """POST /api/tasks (202)."""

    task_id: str
    status: str
    message: str
    queue: str


class PublicError(Described):
    """The final error of a FAILURE: its type and message (the traceback stays in the worker's log)."""

    type: str | None
    message: str | None


class TaskDetail(Described):
    """`status` of GET /api/tasks/{id}; a task still in the RabbitMQ ingress has the first fields only."""

    priority: str | None
    result: Any = Field(description="What the task returned (SUCCESS only, else null)")
    status: str = Field(description="accepted, queued, waiting, scheduled, retrying, running, completed, failed...")
    task_type: str | None
    queue: str | None
    created_at: str | None
    attempts: int
    errors: list[dict[str, Any]] = Field(description="Every failed attempt: type, message, at, attempt")
    error: PublicError | None
    progress: Any = Field(description="What the task last reported with report_progress, or null")
    scheduled_for: str | None = None
    enqueued_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    max_retries: int | None = None
    retries_left: int | None = None
    schedule_id: str | None = None
    workflow_id: str | None = None
    step_id: str | None = None


class TaskStatus(Described):
    """GET /api/tasks/{id}."""

    task_id: str
    state: State
    status: TaskDetail


class TaskSummary(Described):
    """One entry of GET /api/tasks: identity, state and times, without the result."""

    task_id: str
    state: State
    status: str
    task_type: str | None
    priority: str | None
    queue: str | None
    created_at: str | None
    started_at: str | None
    ended_at: str | None
    attempts: int
    error: PublicError | None
    schedule_id: str | None = None


class ListFilters(Described):
    """The filters GET /api/tasks applied."""

    state: str | None
    type: str | None
    task_type: str | None
    priority: str | None


class AvailableFilters(Described):
    """The values each filter of GET /api/tasks takes."""

    states: list[str]
    types: list[str]
    task_types: list[str]
    priorities: list[str]


class TaskList(Described):
    """GET /api/tasks: a page of tasks and how to get the next one."""

    tasks: list[TaskSummary]
    total: int
    total_exact: bool = Field(description="false: `total` is an upper bound (the filter needed too many reads)")
    filters: ListFilters
    available_filters: AvailableFilters
    limit: int
    offset: int
    next_cursor: str | None


class TaskCanceled(Described):
    """POST /api/tasks/{id}/cancel: 200 REVOKED, or 202 STARTED when the task did not stop in time."""

    task_id: str
    state: State
    status: str
    message: str


class PurgeDetails(Described):
    """What a purge removed."""

    active_tasks_revoked: int
    reserved_tasks_revoked: int
    scheduled_tasks_revoked: int
    redis_keys_cleared: int
    workflows_cleared: int


class Purged(Described):
    """POST /api/tasks/purge."""

    status: str
    message: str
    details: PurgeDetails


class StepTask(Described):
    """The task id a workflow step got."""

    task_id: str


class WorkflowSubmitted(Described):
    """POST /api/workflows (202): the workflow id and every step's task id."""

    workflow_id: str
    status: str
    message: str
    steps: dict[str, StepTask]


class Progress(Described):
    """How many steps of a workflow have ended."""

    done: int
    total: int
    percent: float


class StepStatus(Described):
    """One step of GET /api/workflows/{id}: its task's list entry, its parents and its result."""

    task_id: str
    state: State
    status: str
    depends_on: list[str]
    allow_failure: list[str]
    result: Any
    task_type: str | None = None
    priority: str | None = None
    queue: str | None = None
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    attempts: int | None = None
    error: PublicError | None = None
    schedule_id: str | None = None


class OnFailureState(Described):
    """The workflow's on_failure task: `state` is null until a step fails for good."""

    task_id: str
    task_type: str
    state: State | None


class WorkflowStatus(Described):
    """GET /api/workflows/{id}."""

    workflow_id: str
    name: str | None
    state: WorkflowState
    on_failure: OnFailureState | None
    created_at: str | None
    progress: Progress
    steps: dict[str, StepStatus]


class WorkflowEntry(Described):
    """One entry of GET /api/workflows."""

    workflow_id: str
    name: str | None
    state: WorkflowState
    created_at: str | None
    progress: Progress


class WorkflowFilters(Described):
    """The filter GET /api/workflows applied."""

    state: str | None


class WorkflowList(Described):
    """GET /api/workflows: newest first."""

    workflows: list[WorkflowEntry]
    total: int
    limit: int
    offset: int
    filters: WorkflowFilters


class WorkflowCanceled(Described):
    """POST /api/workflows/{id}/cancel."""

    workflow_id: str
    state: WorkflowState
    revoked_steps: list[str]


class Schedule(Described):
    """A periodic task (POST /api/schedules answers 201 with it)."""

    schedule_id: str
    task_type: str | None
    priority: str | None
    parameters: dict[str, Any] | None
    max_retries: int | None
    interval_seconds: int | None
    cron: str | None
    repeat: int | None
    next_run_at: str | None
    created_at: str | None


class ScheduleList(Described):
    """GET /api/schedules."""

    schedules: list[Schedule]
    total: int


class ScheduleDeleted(Described):
    """DELETE /api/schedules/{id}."""

    status: str
    schedule_id: str


class TaskTypeInfo(Described):
    """One registered task type."""

    name: str
    description: str
    max_retries: int
    timeout_s: int
    parameters_schema: dict[str, Any] | None = Field(description="JSON schema of its parameters, if it has a model")
    retention: RetentionOptions = Field(
        description="The history it keeps unless a submit says otherwise ({}: the environment's defaults)"
    )


class TaskTypes(Described):
    """GET /api/task-types."""

    task_types: list[TaskTypeInfo]


class Health(Described):
    """GET /api/health."""

    status: str
    redis: str
    queues: dict[str, int] = Field(description="Tasks waiting on each queue, highest priority first")
    workers: int


class QueueDepth(Described):
    """How many tasks a queue holds in each state (RQ's names; `started` includes a batch worker's claims)."""

    queued: int
    started: int
    scheduled: int
    deferred: int
    finished: int
    failed: int
    canceled: int


class QueueInfo(Described):
    """One task queue in GET /api/queues."""

    name: str
    paused: bool
    depth: QueueDepth
    workers: int = Field(description="Workers registered on this queue")
    oldest_queued_age_s: float | None = Field(description="Seconds since the task at the head was queued, or null")
    finished_last_minute: int


class QueueList(Described):
    """GET /api/queues: every task queue, highest priority first."""

    queues: list[QueueInfo]


class QueuePaused(Described):
    """POST /api/queues/{name}/pause and /resume."""

    queue: str
    paused: bool


class KeyInfo(Described):
    """One API key as GET /api/keys lists it: never the key itself."""

    id: str
    name: str
    scopes: list[str]
    created_at: str | None
    last_used_at: str | None = Field(description="At most a minute stale: each API process writes it once a minute")


class KeyCreated(KeyInfo):
    """POST /api/keys: the new key, shown this once only (only its SHA-256 digest is kept)."""

    key: str


class KeyList(Described):
    """GET /api/keys, oldest first."""

    keys: list[KeyInfo]
    total: int


class KeyRevoked(Described):
    """DELETE /api/keys/{key_id}: the key is refused at once by the API process that answered, by others within 5 s."""

    status: str
    id: str
    name: str


class QueueEmptied(Described):
    """POST /api/queues/{name}/empty."""

    queue: str
    removed: int = Field(description="Queued tasks taken off the queue, the revoked workflow steps included")
    workflow_steps_revoked: int


class TaskRetried(Described):
    """POST /api/tasks/{id}/retry (202): queued again, with the same id."""

    task_id: str
    state: State
    status: str
    message: str


class DeadLetter(Described):
    """One message the bridge dead-lettered."""

    task_id: str | None = Field(description="Its message id (the task id), or the body's task_id")
    reason: str | None = Field(description="Why the bridge refused it (the x-taskrelay-reason header)")
    body: str = Field(description="The body as text, cut at 10,000 characters")


class DeadLetterList(Described):
    """GET /api/ingress/dead-letters."""

    count: int = Field(description="Every message in the dead-letter queue")
    messages: list[DeadLetter]


class DeadLettersReplayed(Described):
    """POST /api/ingress/dead-letters/replay."""

    replayed: int
