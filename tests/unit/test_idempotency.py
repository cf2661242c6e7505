"""Idempotency-Key on POST /api/tasks and /api/workflows: replay, mismatch, in flight, takeover, limits, errors."""

from __future__ import annotations

import json
from uuid import UUID, uuid5

import pytest

from app.idempotency import REPLAYED_HEADER, fingerprint
from core.errors import BackendUnavailable
from core.storage import apikeys, idempotency
from tests.helpers import TEST_API_KEY

SCOPE = apikeys.bootstrap_record(TEST_API_KEY).id
"""Keys are scoped per API key: the test clients send the bootstrap key."""

TASK = {"task_type": "test_echo", "parameters": {"n": 1}}
WORKFLOW = {"steps": [{"id": "a", "task_type": "test_echo"}]}


def queued(fake_redis) -> int:
    return sum(int(fake_redis.llen(f"rq:queue:{p}_priority")) for p in ("high", "normal", "low"))


def lease_lapses(fake_redis, key: str) -> None:
    """What LEASE_S of waiting does to an in-flight record, without the wait: its TTL runs down past the lease."""
    name = idempotency.record_key(SCOPE, key)
    assert fake_redis.pexpire(name, (idempotency.IN_FLIGHT_TTL_S - idempotency.LEASE_S) * 1000)


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
    assert 1 <= int(answer.headers["Retry-After"]) <= idempotency.LEASE_S  # when a retry may take the key over
    fake_redis.pexpire(idempotency.record_key(SCOPE, "busy"), (idempotency.IN_FLIGHT_TTL_S - 3) * 1000)
    assert client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": "busy"}).headers["Retry-After"] == "7"
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


def test_an_in_flight_key_is_taken_over_after_the_lease_with_the_same_seed(fake_redis):
    first = idempotency.begin(fake_redis, SCOPE, "k", "fp")
    assert first.state == "new" and first.claim is not None
    assert idempotency.begin(fake_redis, SCOPE, "k", "fp").state == "in_flight"
    assert idempotency.begin(fake_redis, SCOPE, "k", "other").state == "mismatch"
    lease_lapses(fake_redis, "k")
    taken = idempotency.begin(fake_redis, SCOPE, "k", "fp")
    assert taken.state == "new" and taken.claim is not None
    assert taken.claim.seed == first.claim.seed and taken.claim.holder != first.claim.holder
    assert idempotency.begin(fake_redis, SCOPE, "k", "fp").state == "in_flight"  # the taker holds a fresh lease
    # the first holder, alive after all, neither drops nor frees the taker's claim
    idempotency.abandon(fake_redis, SCOPE, "k", first.claim)
    idempotency.release(fake_redis, SCOPE, "k", first.claim)
    assert idempotency.begin(fake_redis, SCOPE, "k", "fp").state == "in_flight"
    idempotency.release(fake_redis, SCOPE, "k", taken.claim)
    again = idempotency.begin(fake_redis, SCOPE, "k", "fp")
    assert again.state == "new" and again.claim is not None and again.claim.seed == first.claim.seed


@pytest.mark.parametrize(
    ("path", "body", "id_field", "purpose"),
    [("/api/tasks", TASK, "task_id", "task"), ("/api/workflows", WORKFLOW, "workflow_id", "workflow")],
)
def test_a_retry_after_the_first_request_died_unanswered_creates_the_same_one_once(
    client, fake_redis, monkeypatch, path, body, id_field, purpose
):
    """The first request submitted, then its answer was never stored (its process died): the key stays in flight.
    After the lease a retry runs again, with the same ids, so nothing is created twice."""

    def dies(*_args, **_kwargs):
        raise SystemExit("the API process died before storing the answer")

    with monkeypatch.context() as patch:
        patch.setattr(idempotency, "finish", dies)
        with pytest.raises(SystemExit):
            client.post(path, json=body, headers={"Idempotency-Key": "lost-answer"})
    after_first = queued(fake_redis)
    assert after_first == 1
    seed = json.loads(fake_redis.get(idempotency.record_key(SCOPE, "lost-answer")))["seed"]
    assert client.post(path, json=body, headers={"Idempotency-Key": "lost-answer"}).status_code == 409
    lease_lapses(fake_redis, "lost-answer")
    retry = client.post(path, json=body, headers={"Idempotency-Key": "lost-answer"})
    assert retry.status_code == 202 and REPLAYED_HEADER not in retry.headers
    assert queued(fake_redis) == after_first  # the same id: the enqueue kept the first
    assert retry.json[id_field] == str(uuid5(UUID(seed), purpose))
    replay = client.post(path, json=body, headers={"Idempotency-Key": "lost-answer"})
    assert replay.headers[REPLAYED_HEADER] == "true" and replay.json[id_field] == retry.json[id_field]


def test_a_retry_after_a_503_is_not_held_off_and_creates_the_same_task_once(app, client, fake_redis, monkeypatch):
    """A submit that failed after its task was queued (the outcome is unknown to the client): the retry runs at
    once, with the same task id, and the task is queued once."""
    ingress = app.extensions["taskrelay"].ingress
    submit = ingress.submit

    def queued_then_failed(request):
        submit(request)
        raise BackendUnavailable("Redis is not answering (TimeoutError)")

    with monkeypatch.context() as patch:
        patch.setattr(ingress, "submit", queued_then_failed)
        failed = client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": "after-503"})
    assert failed.status_code == 503
    assert queued(fake_redis) == 1
    retry = client.post("/api/tasks", json=TASK, headers={"Idempotency-Key": "after-503"})
    assert retry.status_code == 202
    assert queued(fake_redis) == 1
    job_ids = fake_redis.lrange("rq:queue:normal_priority", 0, -1)
    assert job_ids == [retry.json["task_id"].encode()]
