"""Request and response models of the HTTP API (pydantic v2, rendered into the OpenAPI spec)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.states import LIST_TYPES, STATES
from core.workflow import MAX_MAP_ITEMS, MAX_STEPS

MAX_DELAY_S = 366 * 24 * 3600
"""Longest accepted delay_seconds: one year, in seconds."""
MAX_RETRIES_LIMIT = 25
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500

Priority = Enum("Priority", {p: p for p in ("high", "normal", "low")}, type=str)  # type: ignore[misc]
State = Enum("State", {s: s for s in STATES}, type=str)  # type: ignore[misc]
WorkflowState = Enum(  # type: ignore[misc]
    "WorkflowState", {s: s for s in ("PENDING", "STARTED", "SUCCESS", "FAILURE", "REVOKED")}, type=str
)
ListType = Enum("ListType", {t: t for t in LIST_TYPES}, type=str)  # type: ignore[misc]


class SubmitTask(BaseModel):
    """A task to run: which type, how urgent, its parameters, and optionally when."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(description="A registered task type, e.g. data_processing", min_length=1, max_length=200)
    priority: Priority = Field(default=Priority.normal, description="high, normal or low")  # type: ignore[attr-defined]
    parameters: dict[str, Any] = Field(default_factory=dict, description="Task-specific parameters (a JSON object)")
    run_at: datetime | None = Field(default=None, description="Run no earlier than this ISO 8601 time (UTC if naive)")
    delay_seconds: float | None = Field(default=None, ge=0, le=MAX_DELAY_S, description="Run after this many seconds")
    max_retries: int | None = Field(
        default=None, ge=0, le=MAX_RETRIES_LIMIT, description="Retries after a failed attempt (default: per task type)"
    )

    @model_validator(mode="after")
    def _one_schedule(self) -> SubmitTask:
        if self.run_at is not None and self.delay_seconds is not None:
            raise ValueError("give run_at or delay_seconds, not both")
        return self


class TaskSubmitted(BaseModel):
    """The answer to a submission (202)."""

    task_id: str
    status: str = "submitted"
    message: str
    queue: str


class TaskPath(BaseModel):
    """The task id in the URL."""

    task_id: str = Field(max_length=200)


class ListQuery(BaseModel):
    """Filters and paging for GET /api/tasks."""

    model_config = ConfigDict(extra="forbid")

    state: State | None = Field(default=None, description="PENDING, STARTED, SUCCESS, FAILURE, RETRY or REVOKED")
    type: ListType | None = Field(default=None, description="active, reserved, scheduled or completed")
    task_type: str | None = Field(default=None, description="Only tasks of this registered type")
    priority: Priority | None = Field(default=None, description="Only tasks of this priority")
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    offset: int = Field(default=0, ge=0, description="Skip this many matching tasks")
    cursor: str | None = Field(default=None, description="next_cursor of the previous page (faster than offset)")

    @field_validator("state", mode="before")
    @classmethod
    def _upper_state(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("type", "priority", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class CreateSchedule(BaseModel):
    """A periodic task: what to run, and every `interval_seconds` or on a `cron` expression."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(min_length=1, max_length=200, description="A registered task type")
    priority: Priority = Field(default=Priority.normal)  # type: ignore[attr-defined]
    parameters: dict[str, Any] = Field(default_factory=dict)
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES_LIMIT)
    interval_seconds: int | None = Field(default=None, ge=1, le=MAX_DELAY_S, description="Run every N seconds")
    cron: str | None = Field(default=None, max_length=200, description="Cron expression (UTC), e.g. '*/5 * * * *'")
    repeat: int | None = Field(default=None, ge=1, description="Stop after this many runs (default: forever)")

    @model_validator(mode="after")
    def _one_timing(self) -> CreateSchedule:
        if (self.interval_seconds is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_seconds or cron")
        return self


class SchedulePath(BaseModel):
    """The schedule id in the URL."""

    schedule_id: str = Field(max_length=200)


STEP_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"


class MapSpec(BaseModel):
    """Fan a step out over a list from an ancestor's result: one task per element, results kept in order."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    source: str = Field(
        alias="$from", pattern=STEP_ID_PATTERN, description="The ancestor step whose result holds the list"
    )
    path: str = Field(default="", max_length=1000, description="JSON Pointer to the list in that result ('' = all)")
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=MAX_MAP_ITEMS,
        description="At most this many elements at once (in lanes: element i starts after element i - n ended)",
    )
    tolerated_failures: int = Field(default=0, ge=0, le=MAX_MAP_ITEMS, description="Elements that may fail")
    tolerated_failure_percent: float = Field(
        default=0.0, ge=0, le=100, description="Percentage of elements that may fail (the larger allowance wins)"
    )


class WorkflowStep(BaseModel):
    """One step: a task, the steps it waits for, and parameters that may take an ancestor's result."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=STEP_ID_PATTERN, description="Unique in the workflow: letters, digits, _ . -")
    task_type: str = Field(min_length=1, max_length=200, description="A registered task type")
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description='Task parameters; a value {"$from": "<step id>", "path": "<JSON Pointer>"} is replaced by that '
        "part of an ancestor step's result when this step starts",
    )
    depends_on: list[str] = Field(
        default_factory=list, max_length=MAX_STEPS, description="Step ids this step waits for"
    )
    allow_failure: list[str] = Field(
        default_factory=list,
        max_length=MAX_STEPS,
        description="Parents (of depends_on) whose failure this step tolerates: it runs anyway, and a $from "
        'reference to such a parent gives {"error": {"type", "message"}} in place of its result',
    )
    priority: Priority | None = Field(default=None, description="high, normal or low (default: the workflow's)")
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES_LIMIT)
    map: MapSpec | None = Field(
        default=None,
        description=f"Run this step once per element of a list (at most {MAX_MAP_ITEMS:,}); in its parameters "
        '{"$item": "<JSON Pointer>"} is that part of the element. Its result is the list of the elements\' results',
    )


class OnFailureStep(BaseModel):
    """A task run once if any step of the workflow fails for good; it gets `parameters` plus `failure`."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(min_length=1, max_length=200)
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description='Merged with {"failure": {"workflow_id", "step_id", "task_id", "error": {"type", "message"}}}',
    )
    priority: Priority | None = Field(default=None)


class SubmitWorkflow(BaseModel):
    """A DAG of steps (at most 2,000) run in dependency order."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=200)
    priority: Priority = Field(default=Priority.normal, description="The steps' default priority")  # type: ignore[attr-defined]
    steps: list[WorkflowStep] = Field(min_length=1, max_length=MAX_STEPS)
    on_failure: OnFailureStep | None = Field(default=None, description="Run once when a step fails for good")


class WorkflowPath(BaseModel):
    """The workflow id in the URL."""

    workflow_id: str = Field(max_length=200)


class WorkflowListQuery(BaseModel):
    """Paging for GET /api/workflows."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    offset: int = Field(default=0, ge=0)
    state: WorkflowState | None = Field(default=None, description="PENDING, STARTED, SUCCESS, FAILURE or REVOKED")

    @field_validator("state", mode="before")
    @classmethod
    def _upper_state(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value
