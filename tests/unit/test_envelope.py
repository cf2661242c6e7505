"""The ingress envelope: round trip, and every kind of garbage refused with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bridge.message import VERSION, TaskEnvelope
from core.errors import PoisonMessage
from core.model import TaskRequest

REQUEST = TaskRequest(
    task_id="t-1",
    task_type="data_processing",
    priority="high",
    parameters={"data": [1, 2]},
    submitted_at="2026-11-28T10:00:00+00:00",
    max_retries=2,
    run_at=datetime(2030, 1, 1, tzinfo=UTC),
)


def test_round_trip_keeps_every_field():
    body = TaskEnvelope.from_request(REQUEST).encode()
    assert json.loads(body)["version"] == VERSION
    assert TaskEnvelope.decode(body).to_request() == REQUEST


def mutated(**changes):
    fields = json.loads(TaskEnvelope.from_request(REQUEST).encode())
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v != "DROP"}).encode()


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
    ],
)
def test_garbage_is_poison_with_a_reason(body, reason):
    with pytest.raises(PoisonMessage, match=reason):
        TaskEnvelope.decode(body)
