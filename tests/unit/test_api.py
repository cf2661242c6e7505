"""The HTTP contract of the seed README, on fakeredis with an in-process worker."""

from __future__ import annotations

import re
from typing import Any

import pytest

from app import create_app
from tests.helpers import keyed_settings, submit

SEED_TASK: dict[str, Any] = {"task_type": "data_processing", "priority": "high", "parameters": {"data": "example data"}}


def test_submit_answers_the_seed_shape(client):
    response = client.post("/api/tasks", json=SEED_TASK)
    assert response.status_code == 202
    body = response.json
    assert set(body) == {"task_id", "status", "message", "queue"}
    assert body["status"] == "submitted"
    assert body["message"] == "Task has been submitted successfully"
    assert body["queue"] == "high_priority"


@pytest.mark.parametrize(("priority", "queue"), [("high", "high_priority"), ("low", "low_priority")])
def test_priority_picks_the_queue(client, fake_redis, priority, queue):
    task_id = submit(client, priority=priority)
    assert fake_redis.lrange(f"rq:queue:{queue}", 0, -1) == [task_id.encode()]


def test_priority_defaults_to_normal(client):
    body = {"task_type": "data_processing", "parameters": {"data": [1, 2]}}
    assert client.post("/api/tasks", json=body).json["queue"] == "normal_priority"


def test_status_follows_the_task_to_success(client, drain):
    task_id = submit(client, **SEED_TASK)
    pending = client.get(f"/api/tasks/{task_id}").json
    assert pending["state"] == "PENDING"
    assert pending["status"]["status"] == "queued"
    drain()
    done = client.get(f"/api/tasks/{task_id}").json
    assert done["state"] == "SUCCESS"
    status = done["status"]
    assert status["status"] == "completed"
    assert status["priority"] == "high"
    assert status["task_type"] == "data_processing"
    assert status["result"]["processed"] is True
    assert status["result"]["data"] == {"data": "example data"}
    assert status["attempts"] == 1
    assert status["started_at"] and status["ended_at"]


def test_unknown_task_id_is_404(client):
    response = client.get("/api/tasks/never-submitted")
    assert response.status_code == 404
    assert response.json["error"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field", "allowed"),
    [
        ({"task_type": "nope"}, "task_type", ["data_processing", "email_sending", "file_processing"]),
        ({"task_type": "data_processing", "priority": "urgent"}, "priority", ["high", "normal", "low"]),
        ({"task_type": "data_processing", "parameters": [1, 2]}, "parameters", None),
        ({"task_type": "data_processing", "parameters": {}}, "parameters.data", None),
        ({"task_type": "data_processing", "parameters": {"data": 1}, "max_retries": -1}, "max_retries", None),
        ({"task_type": "data_processing", "parameters": {"data": 1}, "prioritee": "high"}, "prioritee", None),
        ({"priority": "high"}, "task_type", None),
    ],
)
def test_bad_submissions_name_the_field(client, body, field, allowed):
    response = client.post("/api/tasks", json=body)
    assert response.status_code == 400
    error = response.json
    assert error["status"] == "error"
    named = {f["field"]: f for f in error["fields"]}
    assert field in named, error
    if allowed:
        assert set(allowed) <= set(named[field]["allowed"])
    assert field in error["message"] or "task_type" in error["message"]


def test_bad_json_is_400(client):
    response = client.post("/api/tasks", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "not valid JSON" in response.json["message"]


def test_non_json_content_type_is_415(client):
    response = client.post("/api/tasks", data="task_type=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "application/json" in response.json["message"]


def test_body_over_the_limit_is_413(fake_redis, tmp_path):
    app = create_app(keyed_settings({"MAX_BODY_BYTES": "2048"}), fake_redis)
    big = {"task_type": "data_processing", "parameters": {"data": "x" * 4096}}
    response = app.test_client().post("/api/tasks", json=big)
    assert response.status_code == 413
    assert response.json is not None
    assert "2048" in response.json["message"]
    assert fake_redis.llen("rq:queue:normal_priority") == 0


def test_both_run_at_and_delay_is_400(client):
    body = {**SEED_TASK, "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5}
    response = client.post("/api/tasks", json=body)
    assert response.status_code == 400
    assert "not both" in response.json["message"]


def test_delayed_task_is_pending_and_listed_as_scheduled(client, drain):
    task_id = submit(client, delay_seconds=3600)
    drain()  # not due: the worker must not run it
    status = client.get(f"/api/tasks/{task_id}").json
    assert status["state"] == "PENDING"
    assert status["status"]["status"] == "scheduled"
    listed = client.get("/api/tasks?type=scheduled").json
    assert [t["task_id"] for t in listed["tasks"]] == [task_id]
    assert client.get("/api/tasks?type=reserved").json["total"] == 0


def test_docs_are_served_without_a_cdn(client):
    spec = client.get("/openapi/openapi.json").json
    assert "/api/tasks" in spec["paths"]
    assert "/api/tasks/purge" in spec["paths"]
    assert {"/api/workflows", "/api/workflows/{workflow_id}", "/api/tasks/{task_id}/cancel"} <= set(spec["paths"])
    page = client.get("/openapi/swagger")
    assert page.status_code == 200
    assert b"cdn" not in page.data.lower()
    assets = re.findall(r'(?:src|href)="(swagger/[^"]+)"', page.get_data(as_text=True))
    assert len(assets) >= 3  # the UI's script, styles and logo, served from the package
    for asset in assets:
        with client.get(f"/openapi/{asset}") as served:  # a file response: closed, as a server closes it
            assert served.status_code == 200 and len(served.data) > 1000, asset


def test_task_types_lists_registered_types(client):
    names = {t["name"] for t in client.get("/api/task-types").json["task_types"]}
    assert {"data_processing", "email_sending", "file_processing"} <= names


def test_unknown_route_is_json_404(client):
    response = client.get("/api/nothing-here")
    assert response.status_code == 404
    assert response.json["status"] == "error"


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("get", "/api/tasks/a%07b", "task_id"),
        ("post", "/api/tasks/a%C2%BEb/cancel", "task_id"),
        ("get", "/api/workflows/a.b", "workflow_id"),
        ("delete", "/api/schedules/a%20b", "schedule_id"),
    ],
)
def test_a_malformed_id_is_a_400_naming_it(client, method, path, field):
    response = getattr(client, method)(path)  # RQ refuses such job ids: this was a 500 (found by the fuzz test)
    assert response.status_code == 400, response.json
    assert [f["field"] for f in response.json["fields"]] == [field]


def test_a_suffix_after_a_colon_does_not_read_another_task(client):
    task_id = submit(client)
    assert client.get(f"/api/tasks/{task_id}:anything").status_code == 400  # RQ would read it as `task_id`


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/workflows?limit=245&offset=18446744073709551615", "offset"),  # a 500 from Redis (found by fuzzing)
        ("/api/tasks?offset=18446744073709551615", "offset"),
        ("/api/tasks?cursor=0.18446744073709551615", "cursor"),
    ],
)
def test_an_offset_past_what_redis_takes_is_a_400(client, url, field):
    response = client.get(url)
    assert response.status_code == 400, response.json
    assert [f["field"] for f in response.json["fields"]] == [field]


@pytest.mark.parametrize(
    ("path", "extra", "field"),
    [
        ("/api/tasks", {"max_retries": False}, "max_retries"),  # was read as 0 (found by fuzzing)
        ("/api/tasks", {"max_retries": "3"}, "max_retries"),
        ("/api/tasks", {"delay_seconds": "5"}, "delay_seconds"),
        ("/api/tasks", {"run_at": 0}, "run_at"),  # was 1970-01-01
        ("/api/tasks", {"run_at": "0"}, "run_at"),
        ("/api/tasks", {"run_at": "2030-01-01"}, "run_at"),
        ("/api/schedules", {"interval_seconds": "60"}, "interval_seconds"),
        ("/api/schedules", {"interval_seconds": 60, "repeat": True}, "repeat"),
    ],
)
def test_numbers_and_times_must_be_what_the_spec_says(client, path, extra, field):
    body = {"task_type": "data_processing", "parameters": {"data": [1]}, **extra}
    if path == "/api/schedules" and "interval_seconds" not in extra:
        body["interval_seconds"] = 60
    response = client.post(path, json=body)
    assert response.status_code == 400, response.json
    assert [f["field"] for f in response.json["fields"]] == [field]


def test_an_iso_time_with_an_offset_is_still_accepted(client):
    body = {"task_type": "data_processing", "parameters": {"data": [1]}, "run_at": "2030-01-01T06:00:00+02:00"}
    assert client.post("/api/tasks", json=body).status_code == 202
