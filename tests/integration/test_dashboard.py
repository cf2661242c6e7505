"""rq-dashboard at /dashboard: JSON views answer with JSON jobs and a live worker; never open."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time

import pytest

from app import create_app
from core.settings import Settings
from tests.helpers import keyed_settings
from tests.processes import ROOT

pytestmark = pytest.mark.redis

AUTH = {"Authorization": "Basic " + base64.b64encode(b"ops:s3cret").decode()}


def test_not_mounted_with_auth_off_and_no_login_pair(fake_redis):
    client = create_app(Settings.from_env({"TASKRELAY_AUTH": "off"}), fake_redis).test_client()
    assert client.get("/dashboard/").status_code == 404


def test_dashboard_views_answer_for_json_jobs(redis_url, real_redis):
    settings = keyed_settings({"REDIS_URL": redis_url, "DASHBOARD_USERNAME": "ops", "DASHBOARD_PASSWORD": "s3cret"})
    client = create_app(settings, real_redis).test_client()
    assert client.get("/dashboard/", headers={"X-API-Key": "tr_unknown_key_000000000000000000000"}).status_code == 401
    wrong = {"Authorization": "Basic " + base64.b64encode(b"ops:wrong").decode()}
    assert client.get("/dashboard/0/data/queues.json", headers=wrong).status_code == 401

    held = client.post("/api/tasks", json={"task_type": "test_hold", "parameters": {"release_key": "go", "max_s": 30}})
    done = client.post("/api/tasks", json={"task_type": "data_processing", "parameters": {"data": [1]}})
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TASKRELAY_TASK_MODULES": "tests.fixture_tasks",
        "WORKER_CLASS": "fork",  # one task at a time, so the queued one stays visibly queued
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    worker = subprocess.Popen([sys.executable, "-m", "jobs.worker"], cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 20
        while client.get(f"/api/tasks/{held.json['task_id']}").json["state"] != "STARTED":
            assert time.monotonic() < deadline, "the held task never started"
            time.sleep(0.05)

        assert client.get("/dashboard/", headers=AUTH).status_code == 200
        queues = client.get("/dashboard/0/data/queues.json", headers=AUTH)
        assert queues.status_code == 200
        counts = {q["name"]: q["count"] for q in queues.json["queues"]}  # queues that have held a job
        assert counts["normal_priority"] == 1  # the finished-to-be task; the held one is running
        assert client.post("/api/queues/normal_priority/pause").status_code == 200
        paused = client.get("/dashboard/0/data/queues.json", headers=AUTH).json["queues"]
        [row] = [q for q in paused if q["name"].startswith("normal_priority")]
        assert row["name"] == "normal_priority (paused)" and "normal_priority" in row["queued_url"]
        assert client.post("/api/queues/normal_priority/resume").status_code == 200
        resumed = client.get("/dashboard/0/data/queues.json", headers=AUTH).json["queues"]
        assert "normal_priority" in {q["name"] for q in resumed}

        workers = client.get("/dashboard/0/data/workers.json", headers=AUTH)
        assert workers.status_code == 200
        [seen] = workers.json["workers"]
        assert seen["state"] == "busy"

        started = client.get("/dashboard/0/data/jobs/normal_priority/started/8/asc/1.json", headers=AUTH)
        assert started.status_code == 200
        assert [j["id"] for j in started.json["jobs"]] == [held.json["task_id"]]

        job = client.get(f"/dashboard/0/data/job/{done.json['task_id']}.json", headers=AUTH)
        assert job.status_code == 200
        assert job.json["id"] == done.json["task_id"]
    finally:
        real_redis.set("go", "1")
        worker.terminate()
        worker.wait(timeout=20)


def test_a_result_the_batch_worker_wrote_shows_in_the_dashboard_and_the_api(redis_url, real_redis):
    # The batch worker keeps a success's return value in the job hash, not in RQ's results stream.
    from core.storage.queues import SERIALIZER, worker_queues
    from jobs.batch_worker import BatchWorker

    settings = keyed_settings({"REDIS_URL": redis_url, "DASHBOARD_USERNAME": "ops", "DASHBOARD_PASSWORD": "s3cret"})
    client = create_app(settings, real_redis).test_client()
    task_id = client.post("/api/tasks", json={"task_type": "data_processing", "parameters": {"data": [3, 4]}}).json[
        "task_id"
    ]
    BatchWorker(worker_queues(real_redis), connection=real_redis, serializer=SERIALIZER).work(
        burst=True, logging_level="WARNING"
    )
    status = client.get(f"/api/tasks/{task_id}").json
    assert status["state"] == "SUCCESS"
    assert status["status"]["result"]
    job = client.get(f"/dashboard/0/data/job/{task_id}.json", headers=AUTH)
    assert job.status_code == 200
    assert job.json["status"] == "finished"
    assert job.json["result"] == status["status"]["result"]
    assert not real_redis.exists(f"rq:results:{task_id}")


def test_its_requeue_buttons_do_what_the_retry_endpoint_does(redis_url, real_redis, caplog):
    """rq-dashboard's requeue (one job, and a queue's "requeue all") goes through app/retry.py: a failed task is
    requeued and counted as submitted again; a failed workflow step is refused (it stays failed), as the API would."""
    from core.storage import metrics
    from core.storage.queues import SERIALIZER, worker_queues
    from jobs.batch_worker import BatchWorker

    settings = keyed_settings(
        {
            "REDIS_URL": redis_url,
            "DASHBOARD_USERNAME": "ops",
            "DASHBOARD_PASSWORD": "s3cret",
            "TASKRELAY_TASK_MODULES": "tests.fixture_tasks",
        }
    )
    client = create_app(settings, real_redis).test_client()
    task_id = client.post("/api/tasks", json={"task_type": "test_bad_input", "parameters": {}}).json["task_id"]
    flow = client.post("/api/workflows", json={"steps": [{"id": "a", "task_type": "test_bad_input"}]}).json
    step_id = flow["steps"]["a"]["task_id"]

    def drain() -> None:
        BatchWorker(worker_queues(real_redis), connection=real_redis, serializer=SERIALIZER).work(
            burst=True, logging_level="WARNING"
        )

    drain()
    assert {client.get(f"/api/tasks/{i}").json["state"] for i in (task_id, step_id)} == {"FAILURE"}
    counted = real_redis.hget(metrics.SUBMITTED_KEY, '["test_bad_input","normal"]')

    with caplog.at_level("WARNING", logger="taskrelay.dashboard"):
        assert client.post(f"/dashboard/job/{step_id}/requeue", headers=AUTH).status_code == 200
        assert client.post("/dashboard/requeue/normal_priority", headers=AUTH).status_code == 200
    assert client.get(f"/api/tasks/{task_id}").json["state"] == "RETRY"  # requeued: a new attempt waits
    assert client.get(f"/api/tasks/{step_id}").json["state"] == "FAILURE"  # a step is never retried alone
    refusals = [r.getMessage() for r in caplog.records if r.name == "taskrelay.dashboard"]
    assert len(refusals) == 2 and all("submit the workflow again" in line for line in refusals)
    assert int(real_redis.hget(metrics.SUBMITTED_KEY, '["test_bad_input","normal"]')) == int(counted) + 1
    drain()
    assert client.get(f"/api/tasks/{task_id}").json["status"]["attempts"] == 2
