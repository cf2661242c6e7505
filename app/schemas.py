"""Request models and the error body of the HTTP API (pydantic v2, rendered into the OpenAPI spec).

The success bodies are described in app/response_models.py (named by string: imported with the document);
`documented()` puts both on each route.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.states import LIST_TYPES, STATES
from core.model import MAX_KEEP_AGE_S, MAX_KEEP_COUNT, NO_RETENTION, Keep, Retention
from core.registry import built
from core.storage import apikeys
from core.workflow import MAX_MAP_ITEMS, MAX_STEPS

ResponseDict = dict[Any, Any]
"""An operation's `responses=`: status -> a response model, or an OpenAPI response object (flask-openapi3's)."""
SecuritySchemesDict = dict[str, Any]
"""OpenAPI security schemes by name (flask-openapi3's `security_schemes=`)."""

MAX_DELAY_S = 366 * 24 * 3600
"""Longest accepted delay_seconds: one year, in seconds."""
ID_PATTERN = r"^[A-Za-z0-9_-]+$"
"""What a task, workflow or schedule id in a URL may hold: RQ refuses other job ids (and reads `a:b` as `a`)."""
MAX_RETRIES_LIMIT = 25
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_OFFSET = 1_000_000_000
"""Largest `offset` (and cursor position) a list takes; Redis refuses ranges past 64-bit integers."""
ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")
"""How a run_at must start: a date and a time (pydantic alone also takes "0" or a bare date)."""

Priority = Enum("Priority", {p: p for p in ("high", "normal", "low")}, type=str)  # type: ignore[misc]
State = Enum("State", {s: s for s in STATES}, type=str)  # type: ignore[misc]
WorkflowState = Enum(  # type: ignore[misc]
    "WorkflowState", {s: s for s in ("PENDING", "STARTED", "SUCCESS", "FAILURE", "REVOKED")}, type=str
)
ListType = Enum("ListType", {t: t for t in LIST_TYPES}, type=str)  # type: ignore[misc]


def any_case(words: type[Enum]) -> Callable[[dict[str, Any]], None]:
    """Return a json_schema_extra saying a query filter takes `words` in any case (its validator folds the case)."""
    letters = ("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in w.value) for w in words)
    any_case_schema = {"type": "string", "pattern": f"^({'|'.join(letters)})$"}

    def widen(schema: dict[str, Any]) -> None:
        schema["anyOf"] = [*schema["anyOf"][:-1], any_case_schema, *schema["anyOf"][-1:]]  # before the null

    return widen


class Model(BaseModel):
    """Every model of the API: pydantic builds its validator on first use, not at import.

    A request model is built by the first request that sends one, a model that only
    describes an answer when the OpenAPI document is first written: a Lambda cold
    start pays for the few its first request needs, not for some 60 of them.
    """

    model_config = ConfigDict(defer_build=True)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """pydantic's JSON Schema of the model, generated once per model and arguments (a copy each call).

        Writing the OpenAPI document asks for a model's schema once per operation
        that declares it: 215 times for 46 models (ErrorBody 92 times). Request
        validation (app/openapi.py) reads each request model's schema once.
        """
        key = (cls, args, tuple(sorted(kwargs.items())))
        schema = _JSON_SCHEMAS.get(key)
        if schema is None:
            built(cls)  # pydantic would build it inside, but not safely from two threads at once
            schema = _JSON_SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return _copied(schema)


def _copied(value: Any) -> Any:
    """Return a copy of a JSON value (dicts and lists copied all the way down): 3x faster than copy.deepcopy."""
    if type(value) is dict:
        return {key: _copied(item) for key, item in value.items()}
    if type(value) is list:
        return [_copied(item) for item in value]
    return value


_JSON_SCHEMAS: dict[tuple[Any, ...], dict[str, Any]] = {}
"""Model.model_json_schema's results, by model and arguments."""


class KeepHistory(Model):
    """How much history of one final state to keep (either field may be left out: the task type's, then the
    environment's setting applies)."""

    model_config = ConfigDict(extra="forbid")

    age_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_KEEP_AGE_S,
        strict=True,
        description=f"Keep this task's record this many seconds after it ended (1 to {MAX_KEEP_AGE_S:,}: 90 days)",
    )
    count: int | None = Field(
        default=None,
        ge=1,
        le=MAX_KEEP_COUNT,
        strict=True,
        description=f"Keep at most this many ended tasks of this task type, oldest deleted first (1 to "
        f"{MAX_KEEP_COUNT:,}; the latest setting seen wins; KEEP_FINISHED/KEEP_FAILED still cap each queue)",
    )

    def to_keep(self) -> Keep:
        """Return the setting as the task model holds it."""
        return Keep(self.age_seconds, self.count)


class RetentionOptions(Model):
    """How long, and how many of, this task's kind to keep once it ended: like BullMQ's removeOnComplete and
    removeOnFail. Unset fields fall back to the task type's, then the environment's."""

    model_config = ConfigDict(extra="forbid")

    success: KeepHistory | None = Field(default=None, description="Tasks that ended SUCCESS")
    failure: KeepHistory | None = Field(default=None, description="Tasks that ended FAILURE")

    def to_retention(self) -> Retention:
        """Return the options as the task model holds them."""
        return Retention(*((keep.to_keep() if keep else Keep()) for keep in (self.success, self.failure)))


def retention_body(retention: Retention) -> dict[str, dict[str, int]]:
    """Return `retention` as the API spells it (RetentionOptions): only the fields that are set."""
    return {
        state: {name: value for name, value in (("age_seconds", keep.age_s), ("count", keep.count)) if value}
        for state, keep in retention.keeps().items()
        if keep.age_s or keep.count
    }


def retention_of(options: RetentionOptions | None) -> Retention:
    """Return the task model's retention for a request's optional `retention` (unset: nothing of its own)."""
    return options.to_retention() if options is not None else NO_RETENTION


class SubmitTask(Model):
    """A task to run: which type, how urgent, its parameters, and optionally when."""

    model_config = ConfigDict(  # type: ignore[typeddict-unknown-key]  # flask-openapi3 reads openapi_extra
        extra="forbid",
        openapi_extra={
            "examples": {
                "high": {"value": {"task_type": "data_processing", "priority": "high", "parameters": {"data": "x y"}}}
            }
        },
    )

    task_type: str = Field(description="A registered task type, e.g. data_processing", min_length=1, max_length=200)
    priority: Priority = Field(default=Priority.normal, description="high, normal or low")  # type: ignore[attr-defined]
    parameters: dict[str, Any] = Field(default_factory=dict, description="Task-specific parameters (a JSON object)")
    run_at: datetime | None = Field(default=None, description="Run no earlier than this ISO 8601 time (UTC if naive)")
    delay_seconds: float | None = Field(
        default=None, ge=0, le=MAX_DELAY_S, strict=True, description="Run after this many seconds"
    )
    max_retries: int | None = Field(
        default=None,
        ge=0,
        le=MAX_RETRIES_LIMIT,
        strict=True,
        description="Retries after a failed attempt (default: per task type)",
    )
    retention: RetentionOptions | None = Field(
        default=None, description="History kept once it ended (default: per task type, then the environment's)"
    )

    @field_validator("run_at", mode="before")
    @classmethod
    def _iso_time(cls, value: Any) -> Any:
        if value is not None and not (isinstance(value, str) and ISO_TIME.match(value)):
            raise ValueError("must be an ISO 8601 date and time, e.g. 2026-12-03T17:00:00Z")
        return value

    @model_validator(mode="after")
    def _one_schedule(self) -> SubmitTask:
        if self.run_at is not None and self.delay_seconds is not None:
            raise ValueError("give run_at or delay_seconds, not both")
        return self


class TaskPath(Model):
    """The task id in the URL."""

    task_id: str = Field(max_length=200, pattern=ID_PATTERN)


class QueuePath(Model):
    """The queue's name in the URL: high_priority, normal_priority or low_priority (any other is a 404)."""

    name: str = Field(max_length=200, pattern=ID_PATTERN)


DEAD_LETTERS_MAX = 1000
"""Most dead letters one GET returns."""


class DeadLetterQuery(Model):
    """How many dead letters to return (the count is always of all of them)."""

    limit: int = Field(10, ge=0, le=DEAD_LETTERS_MAX)


class ListQuery(Model):
    """Filters and paging for GET /api/tasks."""

    model_config = ConfigDict(extra="forbid")

    state: State | None = Field(
        default=None,
        description="PENDING, STARTED, SUCCESS, FAILURE, RETRY or REVOKED",
        json_schema_extra=any_case(State),
    )
    type: ListType | None = Field(
        default=None, description="active, reserved, scheduled or completed", json_schema_extra=any_case(ListType)
    )
    task_type: str | None = Field(default=None, description="Only tasks of this registered type")
    priority: Priority | None = Field(
        default=None, description="Only tasks of this priority", json_schema_extra=any_case(Priority)
    )
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Skip this many matching tasks")
    cursor: str | None = Field(default=None, description="next_cursor of the previous page (faster than offset)")

    @field_validator("state", mode="before")
    @classmethod
    def _upper_state(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("type", "priority", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class CreateSchedule(Model):
    """A periodic task: what to run, and every `interval_seconds` or on a `cron` expression."""

    model_config = ConfigDict(  # type: ignore[typeddict-unknown-key]  # flask-openapi3 reads openapi_extra
        extra="forbid",
        openapi_extra={
            "examples": {
                "interval": {
                    "value": {"task_type": "data_processing", "parameters": {"data": [1, 2]}, "interval_seconds": 300}
                },
                "cron": {
                    "value": {
                        "task_type": "email_sending",
                        "parameters": {"to": "ops@example.com", "subject": "daily", "body": "hi"},
                        "cron": "0 6 * * *",
                    }
                },
            }
        },
    )

    task_type: str = Field(min_length=1, max_length=200, description="A registered task type")
    priority: Priority = Field(default=Priority.normal)  # type: ignore[attr-defined]
    parameters: dict[str, Any] = Field(default_factory=dict)
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES_LIMIT, strict=True)
    interval_seconds: int | None = Field(
        default=None, ge=1, le=MAX_DELAY_S, strict=True, description="Run every N seconds"
    )
    cron: str | None = Field(default=None, max_length=200, description="Cron expression (UTC), e.g. '*/5 * * * *'")
    repeat: int | None = Field(
        default=None, ge=1, strict=True, description="Stop after this many runs (default: forever)"
    )

    @model_validator(mode="after")
    def _one_timing(self) -> CreateSchedule:
        if (self.interval_seconds is None) == (self.cron is None):
            raise ValueError("give exactly one of interval_seconds or cron")
        return self


class SchedulePath(Model):
    """The schedule id in the URL."""

    schedule_id: str = Field(max_length=200, pattern=ID_PATTERN)


class CreateKey(Model):
    """A new API key: a unique name and its scopes (admin ⊇ submit ⊇ read)."""

    model_config = ConfigDict(  # type: ignore[typeddict-unknown-key]  # flask-openapi3 reads openapi_extra
        extra="forbid", openapi_extra={"examples": {"ci": {"value": {"name": "ci", "scopes": ["submit"]}}}}
    )

    name: str = Field(pattern=apikeys.NAME_PATTERN, description="Unique; shown in lists and audit lines")
    scopes: list[Literal["read", "submit", "admin"]] = Field(min_length=1, max_length=3)


class KeyPath(Model):
    """A key's id in the URL (from GET /api/keys), never the key itself."""

    key_id: str = Field(pattern=apikeys.ID_PATTERN)


STEP_ID_PATTERN = r"^[A-Za-z0-9_.-]{1,100}$"


class MapSpec(Model):
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


class WorkflowStep(Model):
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
    max_retries: int | None = Field(default=None, ge=0, le=MAX_RETRIES_LIMIT, strict=True)
    retention: RetentionOptions | None = Field(
        default=None, description="History kept once it ended, as for a task (a map step: each element's)"
    )
    map: MapSpec | None = Field(
        default=None,
        description=f"Run this step once per element of a list (at most {MAX_MAP_ITEMS:,}); in its parameters "
        '{"$item": "<JSON Pointer>"} is that part of the element. Its result is the list of the elements\' results',
    )


class OnFailureStep(Model):
    """A task run once if any step of the workflow fails for good; it gets `parameters` plus `failure`."""

    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(min_length=1, max_length=200)
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description='Merged with {"failure": {"workflow_id", "step_id", "task_id", "error": {"type", "message"}}}',
    )
    priority: Priority | None = Field(default=None)


class SubmitWorkflow(Model):
    """A DAG of steps (at most 2,000) run in dependency order."""

    model_config = ConfigDict(  # type: ignore[typeddict-unknown-key]  # flask-openapi3 reads openapi_extra
        extra="forbid",
        openapi_extra={
            "examples": {
                "chain": {
                    "value": {
                        "name": "report",
                        "steps": [
                            {
                                "id": "stats",
                                "task_type": "data_processing",
                                "parameters": {"data": [{"v": 3}, {"v": 4}]},
                            },
                            {
                                "id": "totals",
                                "task_type": "data_processing",
                                "depends_on": ["stats"],
                                "parameters": {"data": [{"$from": "stats", "path": "/result"}]},
                            },
                        ],
                    }
                }
            }
        },
    )

    name: str | None = Field(default=None, max_length=200)
    priority: Priority = Field(default=Priority.normal, description="The steps' default priority")  # type: ignore[attr-defined]
    steps: list[WorkflowStep] = Field(min_length=1, max_length=MAX_STEPS)
    on_failure: OnFailureStep | None = Field(default=None, description="Run once when a step fails for good")


class WorkflowPath(Model):
    """The workflow id in the URL."""

    workflow_id: str = Field(max_length=200, pattern=ID_PATTERN)


class WorkflowListQuery(Model):
    """Paging for GET /api/workflows."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    state: WorkflowState | None = Field(
        default=None,
        description="PENDING, STARTED, SUCCESS, FAILURE or REVOKED",
        json_schema_extra=any_case(WorkflowState),
    )

    @field_validator("state", mode="before")
    @classmethod
    def _upper_state(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value


class Described(Model):
    """A body that only describes an answer in the OpenAPI document (the views build dicts): its validator is
    built when the document is first written."""


class FieldError(Described):
    """One offending field of a refused request, with what is allowed when that is a short list."""

    field: str = Field(description="The field: `priority`, `parameters.data`, `steps[2].depends_on`, `body`...")
    message: str
    allowed: list[str] | str | None = Field(default=None, description="The accepted values, when they are few")


class ErrorBody(Described):
    """Every error answer (app/errors.py render): a code, a sentence a person can act on, the offending fields."""

    status: Literal["error"]
    error: str = Field(description="A code: validation_error, not_found, service_unavailable...")
    message: str
    fields: list[FieldError]


class IdempotencyHeader(Model):
    """The optional Idempotency-Key of a submit (app/idempotency.py)."""

    model_config = ConfigDict(populate_by_name=True)

    idempotency_key: str | None = Field(
        default=None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description="Send the same key again with the same body to get the first answer again, submitted once "
        "(Idempotent-Replayed: true); another body with it: 422; while the first is running: 409",
    )


class IdempotencyInFlight(ErrorBody):
    """409: the first request with this Idempotency-Key is still being processed; retry after `Retry-After` s."""

    model_config = ConfigDict(  # type: ignore[typeddict-unknown-key]  # flask-openapi3 reads openapi_extra
        openapi_extra={
            "description": "Conflict: the first request with this Idempotency-Key is still being processed",
            "headers": {
                "Retry-After": {
                    "required": True,
                    "description": "Seconds until a retry may take the key over (at most 10)",
                    "schema": {"type": "integer"},
                }
            },
        }
    )


IDEMPOTENT_SUBMIT: dict[int, type[BaseModel]] = {409: IdempotencyInFlight, 422: ErrorBody}
"""What a submit with an Idempotency-Key may also answer: still in flight (409), reused for another body (422)."""


class TaskFinishedError(ErrorBody):
    """409: the task already ended; `state` says how."""

    state: State


class TaskNotRetryableError(ErrorBody):
    """409: the task is not FAILURE or REVOKED, or is a workflow's step; `state` says what it is."""

    state: State


class Unauthorized(ErrorBody):
    """401: no API key, or an unknown one."""

    model_config = ConfigDict(  # type: ignore[typeddict-unknown-key]  # flask-openapi3 reads openapi_extra
        openapi_extra={
            "description": "Unauthorized: no API key, or an unknown one",
            "headers": {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
        }
    )


class Unavailable(ErrorBody):
    """503: Redis (or RabbitMQ) is not answering; nothing was accepted. Retry after `Retry-After` seconds."""

    model_config = ConfigDict(  # type: ignore[typeddict-unknown-key]  # flask-openapi3 reads openapi_extra
        openapi_extra={
            "description": "Service Unavailable: Redis or RabbitMQ is not answering; nothing was accepted",
            "headers": {
                "Retry-After": {"required": True, "description": "Seconds to wait", "schema": {"type": "integer"}}
            },
        }
    )


class RateLimited(ErrorBody):
    """429: this key sent more requests than its rate limit allows."""

    model_config = ConfigDict(  # type: ignore[typeddict-unknown-key]  # flask-openapi3 reads openapi_extra
        openapi_extra={
            "description": "Too Many Requests: over this key's rate limit",
            "headers": {
                "Retry-After": {"required": True, "description": "Seconds to wait", "schema": {"type": "integer"}}
            },
        }
    )


SECURITY_SCHEMES: SecuritySchemesDict = {
    "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "Bearer": {"type": "http", "scheme": "bearer"},
}
"""How a client presents its API key: `X-API-Key: <key>` or `Authorization: Bearer <key>`."""
API_KEY: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
"""The `security=` of every operation that needs a key: either scheme will do."""
_ERROR_MODELS: dict[int, type[BaseModel]] = {
    401: Unauthorized,
    409: TaskFinishedError,
    429: RateLimited,
    503: Unavailable,
}
URI_TOO_LONG = {
    "description": "URI Too Long: the request line is over the HTTP server's limit (gunicorn: 4,094 bytes); "
    "the server answers it before the API does, so the body is not the API's JSON"
}


def documented(
    success: ResponseDict, *errors: int, keyed: bool = True, models: dict[int, type[BaseModel]] | None = None
) -> ResponseDict:
    """Return the `responses=` of one operation: its success models, 400, `errors`, 414 and, if `keyed`, 401/403/429.

    A success model may be given by its name in app/response_models.py (the app's
    `named_models`): that module is then imported only when the document is written.

    400 is always declared: flask-openapi3 would otherwise add its own (a bare
    array) in its place. Every error status but 414 has ErrorBody's shape
    (`models` picks another ErrorBody subclass for a status).
    """
    statuses = [400, *errors, *((401, 403, 429) if keyed else ())]
    chosen = {**_ERROR_MODELS, **(models or {})}
    answers: ResponseDict = {**success, **{status: chosen.get(status, ErrorBody) for status in statuses}}
    answers[414] = dict(URI_TOO_LONG)  # a copy: flask-openapi3 writes into it
    return dict(sorted(answers.items(), key=lambda item: int(item[0])))
