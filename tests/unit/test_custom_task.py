"""The README's custom task type example, loaded the documented way, runs end to end."""

from __future__ import annotations

from app import create_app
from core import registry
from tests.helpers import keyed_settings
from tests.processes import free_port


def test_readme_example_task_type_runs(fake_redis, drain, tmp_path):
    settings = keyed_settings({"TASKRELAY_TASK_MODULES": "examples.word_count"})
    client = create_app(settings, fake_redis).test_client()
    assert "word_count" in registry.names()
    body = {"task_type": "word_count", "parameters": {"text": "the cat and the hat", "top": 1}}
    task_id = client.post("/api/tasks", json=body).json["task_id"]
    drain()
    status = client.get(f"/api/tasks/{task_id}").json
    assert status["state"] == "SUCCESS"
    assert status["status"]["result"] == {"words": 5, "top": [["the", 2]]}
    assert status["status"]["max_retries"] == 2


def test_custom_parameters_are_validated_at_submit(fake_redis):
    settings = keyed_settings({"TASKRELAY_TASK_MODULES": "examples.word_count"})
    client = create_app(settings, fake_redis).test_client()
    response = client.post("/api/tasks", json={"task_type": "word_count", "parameters": {"text": "x", "top": 0}})
    assert response.status_code == 400
    assert response.json["fields"][0]["field"] == "parameters.top"


def test_redis_down_is_503_and_nothing_accepted(settings):
    from core.connection import connect

    client = create_app(settings, connect(f"redis://127.0.0.1:{free_port()}/0")).test_client()
    body = {"task_type": "data_processing", "parameters": {"data": [1]}}
    response = client.post("/api/tasks", json=body)
    assert response.status_code == 503
    assert response.json["error"] == "service_unavailable"
    assert "Redis" in response.json["message"]
    assert response.headers["Retry-After"] == "1"
    assert client.get("/api/tasks").status_code == 503
