"""Idempotency-Key on POST /api/tasks and /api/workflows: replay, mismatch, in flight, limits, errors not kept."""

from __future__ import annotations

import pytest

from app.idempotency import REPLAYED_HEADER, fingerprint
from core.storage import apikeys, idempotency
from tests.helpers import TEST_API_KEY

SCOPE = apikeys.bootstrap_record(TEST_API_KEY).id
"""Keys are scoped per API key: the test clients send the bootstrap key."""

TASK = {"task_type": "test_echo", "parameters": {"n": 1}}
WORKFLOW = {"steps": [{"id": "a", "task_type": "test_echo"}]}


def queued(fake_redis) -> int:
    return sum(int(fake_redis.llen(f"rq:queue:{p}_priority")) for p in ("high", "normal", "low"))


@pytest.mark.parametrize(
    ("path", "body", "id_field"), [("/api/tasks", TASK, "task_id"), ("/api/workflows", WORKFLOW, "workflow_id")]
)
def test_the_same_key_and_body_replays_the_first_answer_and_submits_nothing(client, fake_redis, path, body, id_field):
    first = client.post(path, json=body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 202 and REPLAYED_HEADER not in first.headers
    before = queued(fake_redis)
    again = client.post(path, json=dict(reversed(list(body.items()))), headers={"Idempotency-Key": "order-42"})
    assert again.status_code == 202
    assert again.headers[REPLAYED_HEADER] == "true"
    assert again.json == first.json and again.json[id_field] == first.json[id_field]
    assert queued(fake_redis) == before
    other = client.post(path, json=body, headers={"Idempotency-Key": "order-43"})
    assert other.json[id_field] != first.json[id_field]


def test_the_same_key_with_another_body_is_a_422(client):
    client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": "k"})
    answer = client.post("/api/tasks", json={**TASK, "priority": "high"}, headers={"Idempotency-Key": "k"})
    assert answer.status_code == 422
    assert answer.json["error"] == "idempotency_key_reused"
    assert answer.json["fields"][0]["field"] == "Idempotency-Key"


def test_a_key_still_in_flight_is_a_409(client, fake_redis):
    content = fingerprint("/api/tasks", b'{"task_type": "test_echo", "parameters": {"n": 1}}')
    assert idempotency.begin(fake_redis, SCOPE, "busy", content).state == "new"
    answer = client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": "busy"})
    assert answer.status_code == 409 and answer.json["error"] == "idempotency_conflict"
    assert 0 < fake_redis.ttl(idempotency.record_key(SCOPE, "busy")) <= idempotency.IN_FLIGHT_TTL_S


def test_a_refused_request_keeps_no_record_so_the_key_can_be_sent_again(client):
    bad = client.post("/api/tasks", json={"task_type": "nope"}, headers={"Idempotency-Key": "fix-me"})
    assert bad.status_code == 400
    fixed = client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": "fix-me"})
    assert fixed.status_code == 202 and REPLAYED_HEADER not in fixed.headers


@pytest.mark.parametrize("key", ["", "x" * 256])
def test_a_key_that_is_empty_or_over_255_characters_is_a_400(client, key):
    answer = client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": key})
    assert answer.status_code == 400
    assert answer.json["fields"][0]["field"] == "Idempotency-Key"
    assert "1 to 255 characters" in answer.json["message"]


def test_a_255_character_key_is_fine_and_kept_for_the_configured_ttl(client, fake_redis, settings):
    key = "k" * 255
    assert client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": key}).status_code == 202
    ttl = fake_redis.ttl(idempotency.record_key(SCOPE, key))
    assert settings.idempotency_ttl_s - 5 < ttl <= settings.idempotency_ttl_s


def test_other_routes_ignore_the_header(client):
    answer = client.get("/api/tasks", headers={"Idempotency-Key": "x" * 300})
    assert answer.status_code == 200


def test_keys_are_scoped_per_api_key(client, fake_redis):
    first = client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": "shared-name"})
    other_key, _ = apikeys.create(fake_redis, "second", ("submit",))
    client.api_key = other_key
    second = client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": "shared-name"})
    assert second.status_code == 202 and REPLAYED_HEADER not in second.headers
    assert second.json["task_id"] != first.json["task_id"]
