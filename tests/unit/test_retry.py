"""POST /api/tasks/{id}/retry on fakeredis with the in-process batch worker (real workers: tests/integration)."""

from __future__ import annotations

import logging

from core.storage import keys
from core.storage.places import places_of
from core.storage.queues import get_queue
from tests.helpers import submit


def retry(client, task_id: str):
    return client.post(f"/api/tasks/{task_id}/retry")


def status(client, task_id: str) -> dict:
    return client.get(f"/api/tasks/{task_id}").json


def test_a_failed_task_runs_again_with_the_same_id_its_attempts_going_on(client, fake_redis, drain):
    task_id = submit(client, "test_flaky", {"succeed_on": 2}, max_retries=0)
    drain()
    failed = status(client, task_id)
    assert failed["state"] == "FAILURE" and failed["status"]["attempts"] == 1
    answer = retry(client, task_id)
    assert answer.status_code == 202
    assert answer.json == {
        "task_id": task_id,
        "state": "RETRY",
        "status": "retrying",
        "message": "Task has been queued for a new attempt",
    }
    assert fake_redis.ttl(keys.job_key(task_id)) == -1  # queued again: it must not expire while it waits
    assert places_of(get_queue(fake_redis, "normal"))["failed"].read(fake_redis, 0, -1) == []
    drain()
    done = status(client, task_id)
    assert done["state"] == "SUCCESS" and done["status"]["result"] == {"succeeded_on": 2}
    assert done["status"]["attempts"] == 2 and len(done["status"]["errors"]) == 1


def test_a_revoked_task_runs_again(client, fake_redis, drain):
    task_id = submit(client, "test_count", priority="high")
    assert client.post(f"/api/tasks/{task_id}/cancel").status_code == 200
    answer = retry(client, task_id)
    assert answer.status_code == 202 and answer.json["state"] == "PENDING"
    assert places_of(get_queue(fake_redis, "high"))["canceled"].read(fake_redis, 0, -1) == []
    drain()
    assert status(client, task_id)["state"] == "SUCCESS" and fake_redis.get(f"runs:{task_id}") == b"1"


def test_other_states_answer_409_with_the_state(client, drain):
    task_id = submit(client, "test_count")
    queued = retry(client, task_id)
    assert queued.status_code == 409
    assert queued.json["error"] == "task_not_retryable" and queued.json["state"] == "PENDING"
    drain()
    finished = retry(client, task_id)
    assert finished.status_code == 409 and finished.json["state"] == "SUCCESS"


def test_a_second_retry_finds_the_task_queued_already(client, drain):
    task_id = submit(client, "test_bad_input")
    drain()
    assert retry(client, task_id).status_code == 202
    again = retry(client, task_id)
    assert again.status_code == 409 and again.json["state"] == "RETRY"
    drain()
    assert status(client, task_id)["status"]["attempts"] == 2


def test_an_unknown_task_is_a_404(client):
    assert retry(client, "no-such-task").status_code == 404


def test_a_workflow_step_is_not_retried_alone(client, drain):
    workflow = client.post("/api/workflows", json={"steps": [{"id": "a", "task_type": "test_bad_input"}]}).json
    drain()
    answer = retry(client, workflow["steps"]["a"]["task_id"])
    assert answer.status_code == 409 and answer.json["state"] == "FAILURE"
    assert "submit the workflow again" in answer.json["message"]


def test_a_retry_is_audited(client, drain, caplog):
    task_id = submit(client, "test_bad_input")
    drain()
    with caplog.at_level(logging.INFO, logger="taskrelay.audit"):
        retry(client, task_id)
    lines = [r.getMessage() for r in caplog.records if r.name == "taskrelay.audit"]
    assert lines == [f"retry task {task_id} by key 'bootstrap' ({lines[0].split('(')[1].split(')')[0]}): 202"]


def test_a_task_still_in_the_ingress_is_pending_and_not_retried(client, fake_redis):
    from core import accepted
    from core.model import TaskRequest

    accepted.remember(fake_redis, [TaskRequest("in-ingress-2", "test_count", "low", {}, "2026-12-03T00:00:00+00:00")])
    answer = retry(client, "in-ingress-2")
    assert answer.status_code == 409 and answer.json["state"] == "PENDING"
