"""The ingress wire messages: small, versioned JSON envelopes around one task, or one whole workflow.

A workflow travels as one message (`"kind": "workflow"`), so the bridge creates it in one transaction, and a
redelivered copy finds it created and adds nothing. A message without `kind` is a task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.errors import PoisonMessage
from core.model import NO_RETENTION, PRIORITIES, Retention, TaskRequest
from core.workflow import Plan, StepJob

VERSION = 1
REQUIRED = ("task_id", "task_type", "priority", "parameters", "submitted_at")
WORKFLOW_KIND = "workflow"
IN_REDIS_HEADER = "x-taskrelay-in-redis"
"""Set (to 1) on a task's message when the API enqueued the task into RQ too (INGRESS_MODE=dual): the bridge then
looks for the API's mark (core.accepted.take_marks) before it enqueues. A header, not a body field, so a bridge
that predates it reads the message as before (and finds the job there already)."""


@dataclass(frozen=True)
class Outgoing:
    """One encoded message for the ingress queue, as the publisher sends it."""

    body: bytes
    priority: str
    message_id: str
    in_redis: bool = False
    """The API enqueued this task into RQ too (sent as IN_REDIS_HEADER)."""


@dataclass(frozen=True)
class TaskEnvelope:
    """One task on its way from the API to RQ."""

    task_id: str
    task_type: str
    priority: str
    parameters: dict[str, Any]
    submitted_at: str
    run_at: str | None = None
    max_retries: int | None = None
    retention: dict[str, Any] | None = None
    """The task's own history settings (Retention.to_dict); left out of the message when it has none, so a
    bridge that predates the field still reads it."""
    version: int = VERSION

    @classmethod
    def from_request(cls, request: TaskRequest) -> TaskEnvelope:
        """Wrap an accepted task for the wire."""
        return cls(
            task_id=request.task_id,
            task_type=request.task_type,
            priority=request.priority,
            parameters=request.parameters,
            submitted_at=request.submitted_at,
            run_at=request.run_at.isoformat() if request.run_at else None,
            max_retries=request.max_retries,
            retention=request.retention.to_dict() or None,
        )

    def to_request(self) -> TaskRequest:
        """Return the task as the enqueue side takes it."""
        return TaskRequest(
            task_id=self.task_id,
            task_type=self.task_type,
            priority=self.priority,
            parameters=self.parameters,
            submitted_at=self.submitted_at,
            max_retries=self.max_retries,
            run_at=datetime.fromisoformat(self.run_at) if self.run_at else None,
            retention=Retention.from_dict(self.retention) if self.retention else NO_RETENTION,
        )

    def to_fields(self) -> dict[str, Any]:
        """Return the JSON object of this task, without the fields an older bridge would not know when unset."""
        # Not dataclasses.asdict: it deep-copies the parameters, a measurable cost per request.
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        if fields["retention"] is None:
            del fields["retention"]
        return fields

    def encode(self) -> bytes:
        """Return the JSON bytes sent to RabbitMQ."""
        return json.dumps(self.to_fields(), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> TaskEnvelope:
        """Parse a message body; raise PoisonMessage saying why it cannot be a task."""
        return cls.from_fields(_parse(body))

    @classmethod
    def from_fields(cls, fields: Any) -> TaskEnvelope:
        """Check the decoded JSON of one task; raise PoisonMessage saying why it cannot be a task."""
        if not isinstance(fields, dict):
            raise PoisonMessage(f"a task must be a JSON object, not {type(fields).__name__}")
        if fields.get("version") != VERSION:
            raise PoisonMessage(f"unknown envelope version {fields.get('version')!r}; this bridge reads {VERSION}")
        missing = [name for name in REQUIRED if name not in fields]
        if missing:
            raise PoisonMessage(f"missing fields: {', '.join(missing)}")
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise PoisonMessage(f"unknown fields: {', '.join(unknown)}")
        _check(isinstance(fields["task_id"], str) and 0 < len(fields["task_id"]) <= 200, "task_id must be a string")
        _check(isinstance(fields["task_type"], str), "task_type must be a string")
        _check(fields["priority"] in PRIORITIES, f"priority must be one of {', '.join(PRIORITIES)}")
        _check(isinstance(fields["parameters"], dict), "parameters must be an object")
        _check(isinstance(fields["submitted_at"], str), "submitted_at must be a string")
        max_retries = fields.get("max_retries")
        _check(max_retries is None or (isinstance(max_retries, int) and max_retries >= 0), "bad max_retries")
        if fields.get("retention") is not None:
            try:
                Retention.from_dict(fields["retention"])
            except ValueError as exc:
                raise PoisonMessage(str(exc)) from None
        run_at = fields.get("run_at")
        if run_at is not None:
            try:
                parsed = datetime.fromisoformat(run_at)
            except (TypeError, ValueError):
                raise PoisonMessage(f"run_at is not an ISO 8601 time: {run_at!r}") from None
            _check(parsed.tzinfo is not None, "run_at must carry a UTC offset")
        return cls(**fields)


@dataclass(frozen=True)
class WorkflowEnvelope:
    """One whole workflow on its way from the API to RQ: its document and every step's task and parents."""

    plan: Plan

    def encode(self) -> bytes:
        """Return the JSON bytes sent to RabbitMQ."""
        steps = [
            {
                "step_id": step.step_id,
                "parents": list(step.parent_task_ids),
                "tolerates_failure": step.tolerates_failure,
                "is_map": step.is_map,
                "task": task.to_fields(),
            }
            for step in self.plan.steps
            for task in (TaskEnvelope.from_request(step.request),)
        ]
        fields = {
            "version": VERSION,
            "kind": WORKFLOW_KIND,
            "workflow_id": self.plan.workflow_id,
            "document": self.plan.document,
            "steps": steps,
        }
        return json.dumps(fields, separators=(",", ":")).encode()

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> WorkflowEnvelope:
        """Check the decoded JSON of a workflow message; raise PoisonMessage saying why it cannot be one."""
        unknown = sorted(set(fields) - {"version", "kind", "workflow_id", "document", "steps"})
        if unknown:
            raise PoisonMessage(f"unknown workflow fields: {', '.join(unknown)}")
        workflow_id, document, steps = fields.get("workflow_id"), fields.get("document"), fields.get("steps")
        if not (isinstance(workflow_id, str) and 0 < len(workflow_id) <= 200):
            raise PoisonMessage("workflow_id must be a string")
        if not (isinstance(document, dict) and isinstance(document.get("steps"), dict)):
            raise PoisonMessage("document must be an object with steps")
        if not (isinstance(steps, list) and steps):
            raise PoisonMessage("steps must be a non-empty list")
        jobs = []
        for n, step in enumerate(steps):
            _check(isinstance(step, dict), f"steps[{n}] must be an object")
            parents = step.get("parents")
            _check(isinstance(step.get("step_id"), str), f"steps[{n}].step_id must be a string")
            _check(
                isinstance(parents, list) and all(isinstance(p, str) for p in parents),
                f"steps[{n}].parents must be a list of task ids",
            )
            task = TaskEnvelope.from_fields(step.get("task"))
            jobs.append(
                StepJob(step["step_id"], task.to_request(), tuple(parents), bool(step.get("tolerates_failure")))
            )
        return cls(Plan(workflow_id, document, tuple(jobs)))


def decode(body: bytes) -> TaskEnvelope | WorkflowEnvelope:
    """Parse any ingress message: a workflow (`"kind": "workflow"`) or a task; raise PoisonMessage if neither."""
    fields = _parse(body)
    if isinstance(fields, dict) and fields.get("kind") == WORKFLOW_KIND:
        if fields.get("version") != VERSION:
            raise PoisonMessage(f"unknown envelope version {fields.get('version')!r}; this bridge reads {VERSION}")
        return WorkflowEnvelope.from_fields(fields)
    return TaskEnvelope.from_fields(fields)


def _parse(body: bytes) -> Any:
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise PoisonMessage(f"not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise PoisonMessage(f"not a JSON object but {type(fields).__name__}")
    return fields


def _check(condition: bool, reason: str) -> None:
    if not condition:
        raise PoisonMessage(reason)
