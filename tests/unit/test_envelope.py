"""The ingress envelope: round trip, and every kind of garbage refused with a reason."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bridge.message import VERSION, TaskEnvelope, WorkflowEnvelope, decode
from core.errors import PoisonMessage
from core.model import Keep, Retention, TaskRequest
from core.workflow import Plan, StepJob

REQUEST = TaskRequest(
    task_id="t-1",
    task_type="data_processing",
    priority="high",
    parameters={"data": [1, 2]},
    submitted_at="2026-11-28T10:00:00+00:00",
    max_retries=2,
    run_at=datetime(2030, 1, 1, tzinfo=UTC),
    retention=Retention(success=Keep(age_s=60), failure=Keep(age_s=3600, count=10)),
)


def test_round_trip_keeps_every_field():
    body = TaskEnvelope.from_request(REQUEST).encode()
    assert json.loads(body)["version"] == VERSION
    assert TaskEnvelope.decode(body).to_request() == REQUEST


def mutated(**changes):
    fields = json.loads(TaskEnvelope.from_request(REQUEST).encode())
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v != "DROP"}).encode()


def test_a_task_without_retention_leaves_the_field_out_and_a_message_without_it_still_decodes():
    plain = TaskRequest("t-2", "data_processing", "low", {}, "2026-11-28T10:00:00+00:00")
    body = TaskEnvelope.from_request(plain).encode()
    assert "retention" not in json.loads(body)  # a bridge that predates the field reads it
    assert TaskEnvelope.decode(body).to_request() == plain
    assert TaskEnvelope.decode(mutated(retention="DROP")).to_request() == replace(REQUEST, retention=Retention())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x00\xff", "not JSON"),
        (b"[]", "not a JSON object"),
        (mutated(version=2), "unknown envelope version 2"),
        (mutated(task_type="DROP"), "missing fields: task_type"),
        (mutated(priority="urgent"), "priority must be one of high, normal, low"),
        (mutated(parameters=[1]), "parameters must be an object"),
        (mutated(max_retries=-1), "bad max_retries"),
        (mutated(run_at="tomorrow"), "run_at is not an ISO 8601 time"),
        (mutated(run_at="2030-01-01T00:00:00"), "run_at must carry a UTC offset"),
        (mutated(extra=1), "unknown fields: extra"),
        (mutated(retention=[1]), "retention must be an object with success and/or failure"),
        (mutated(retention={"success": {"age": 1}}), "retention.success must be an object with age_s and/or count"),
        (mutated(retention={"failure": {"count": 0}}), r"retention.failure.count must be an integer from 1 to"),
    ],
)
def test_garbage_is_poison_with_a_reason(body, reason):
    with pytest.raises(PoisonMessage, match=reason):
        TaskEnvelope.decode(body)


PLAN = Plan(
    "w-1",
    {"workflow_id": "w-1", "name": "n", "steps": {"a": {"task_id": "t-1"}, "b": {"task_id": "t-2"}}},
    (StepJob("a", REQUEST, ()), StepJob("b", TaskRequest("t-2", "data_processing", "low", {}, "x"), ("t-1",), True)),
)


def test_a_workflow_round_trips_as_one_message_and_a_task_still_decodes_as_a_task():
    body = WorkflowEnvelope(PLAN).encode()
    assert json.loads(body)["kind"] == "workflow"
    decoded = decode(body)
    assert isinstance(decoded, WorkflowEnvelope) and decoded.plan == PLAN
    assert PLAN.priority == "high"
    assert decode(TaskEnvelope.from_request(REQUEST).encode()) == TaskEnvelope.from_request(REQUEST)


def mutated_workflow(**changes):
    fields = json.loads(WorkflowEnvelope(PLAN).encode())
    fields.update(changes)
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (mutated_workflow(version=9), "unknown envelope version 9"),
        (mutated_workflow(extra=1), "unknown workflow fields: extra"),
        (mutated_workflow(workflow_id=7), "workflow_id must be a string"),
        (mutated_workflow(document=[]), "document must be an object"),
        (mutated_workflow(steps=[]), "steps must be a non-empty list"),
        (mutated_workflow(steps=[{"step_id": "a", "parents": "t-0", "task": {}}]), r"steps\[0\].parents"),
        (mutated_workflow(steps=[{"step_id": "a", "parents": [], "task": {"version": 1}}]), "missing fields"),
    ],
)
def test_a_garbled_workflow_is_poison_with_a_reason(body, reason):
    with pytest.raises(PoisonMessage, match=reason):
        decode(body)
