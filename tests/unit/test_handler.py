"""The Lambda handler with real-shaped API Gateway REST (payload v1) events from infra/events/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import handler
from app import create_app

EVENTS = Path(__file__).resolve().parents[2] / "infra" / "events"


def event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def lambda_app(settings, fake_redis, monkeypatch):
    app = create_app(settings, fake_redis)
    monkeypatch.setattr(handler, "_app", app)
    return app


def call(evt: dict) -> tuple[int, dict, dict]:
    answer = handler.lambda_handler(evt, None)
    return int(answer["statusCode"]), answer["headers"], json.loads(answer["body"])


def test_post_then_get_then_list(lambda_app):
    status, headers, body = call(event("post_task.json"))
    assert status == 202
    assert headers["Content-Type"] == "application/json"
    assert body["status"] == "submitted" and body["queue"] == "high_priority"

    get = event("get_task.json")
    get["path"] = f"/api/tasks/{body['task_id']}"
    status, _, task = call(get)
    assert status == 200
    assert task["state"] == "PENDING" and task["status"]["task_type"] == "data_processing"

    status, _, listed = call(event("list_tasks.json"))
    assert status == 200
    assert listed["filters"] == {"state": "PENDING", "type": "reserved", "task_type": None, "priority": None}
    assert [t["task_id"] for t in listed["tasks"]] == [body["task_id"]]


def test_base64_body_is_decoded(lambda_app, fake_redis):
    status, _, body = call(event("post_task_base64.json"))
    assert status == 202
    assert fake_redis.lrange("rq:queue:high_priority", 0, -1) == [body["task_id"].encode()]


def test_unknown_route_and_unknown_task_are_json_404s(lambda_app):
    status, _, body = call(event("unknown_route.json"))
    assert status == 404 and body["status"] == "error"
    status, _, body = call(event("get_task.json"))
    assert status == 404 and body["error"] == "not_found"


def test_malformed_body_is_400(lambda_app):
    status, _, body = call(event("malformed_body.json"))
    assert status == 400
    assert "not valid JSON" in body["message"]


def test_purge_answers_the_seed_shape(lambda_app):
    call(event("post_task.json"))
    status, _, body = call(event("purge_tasks.json"))
    assert status == 200
    assert body["details"]["reserved_tasks_revoked"] == 1


def test_http_api_v2_event_is_refused_clearly(lambda_app):
    v2 = {"version": "2.0", "routeKey": "POST /api/tasks", "rawPath": "/api/tasks", "requestContext": {"http": {}}}
    status, _, body = call(v2)
    assert status == 400
    assert "payload format 1.0" in body["message"]


def test_app_is_built_once_per_container(monkeypatch, settings, fake_redis):
    built = []

    def build():
        built.append(1)
        return create_app(settings, fake_redis)

    monkeypatch.setattr(handler, "_app", None)
    monkeypatch.setattr(handler, "create_app", build)
    for _ in range(3):
        assert call(event("unknown_route.json"))[0] == 404
    assert built == [1]


def test_cancel_revokes_a_queued_task(lambda_app):
    _, _, submitted = call(event("post_task.json"))
    cancel = event("cancel_task.json")
    cancel["path"] = cancel["path"].replace("TASK_ID", submitted["task_id"])
    cancel["pathParameters"]["proxy"] = cancel["pathParameters"]["proxy"].replace("TASK_ID", submitted["task_id"])
    status, _, body = call(cancel)
    assert status == 200 and body["state"] == "REVOKED"
    status, _, body = call(cancel)
    assert status == 409 and body["state"] == "REVOKED"


def test_workflows_through_the_handler(lambda_app, fake_redis):
    status, _, submitted = call(event("post_workflow.json"))
    assert status == 202 and set(submitted["steps"]) == {"a", "b"}
    get = event("get_workflow.json")
    unknown = get["path"].rsplit("/", 1)[1]
    get["path"] = get["path"].replace(unknown, submitted["workflow_id"])
    get["pathParameters"]["proxy"] = get["pathParameters"]["proxy"].replace(unknown, submitted["workflow_id"])
    status, _, workflow = call(get)
    assert status == 200 and workflow["state"] == "PENDING" and workflow["name"] == "lambda"
    assert workflow["steps"]["b"]["depends_on"] == ["a"]


def test_an_event_without_a_key_is_refused(lambda_app):
    anonymous = event("post_task.json")
    del anonymous["headers"]["X-API-Key"], anonymous["multiValueHeaders"]["X-API-Key"]
    status, headers, body = call(anonymous)
    assert status == 401 and body["error"] == "unauthorized"
    assert headers["WWW-Authenticate"] == 'Bearer realm="taskrelay"'


def test_an_idempotency_key_replays_through_the_handler(lambda_app, fake_redis):
    keyed = event("post_task.json")
    keyed["headers"]["Idempotency-Key"] = "lambda-retry-1"
    keyed["multiValueHeaders"]["Idempotency-Key"] = ["lambda-retry-1"]
    first_status, _, first = call(keyed)
    again_status, again_headers, again = call(keyed)
    assert first_status == again_status == 202
    assert again_headers["Idempotent-Replayed"] == "true" and again["task_id"] == first["task_id"]
    assert fake_redis.llen("rq:queue:high_priority") + fake_redis.llen("rq:queue:normal_priority") == 1
