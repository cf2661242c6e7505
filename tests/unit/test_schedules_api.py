"""The schedules API on fakeredis: validation, listing, deletion, and `fire` creating a fresh task."""

from __future__ import annotations

import pytest
from rq import Queue, SimpleWorker

from core.model import SCHEDULES_QUEUE
from core.storage import metrics
from core.storage.queues import SERIALIZER, JSONJob, worker_queues

INTERVAL = {"task_type": "data_processing", "parameters": {"data": [1]}, "interval_seconds": 60}


def test_create_list_delete(client):
    created = client.post("/api/schedules", json=INTERVAL)
    assert created.status_code == 201
    schedule = created.json
    assert schedule["schedule_id"].startswith("schedule-")
    assert schedule["interval_seconds"] == 60 and schedule["cron"] is None
    assert schedule["next_run_at"]
    cron = client.post("/api/schedules", json={**INTERVAL, "interval_seconds": None, "cron": "0 3 * * *"}).json
    assert cron["cron"] == "0 3 * * *" and cron["next_run_at"].endswith("03:00:00+00:00")
    listed = client.get("/api/schedules").json
    assert listed["total"] == 2
    assert client.delete(f"/api/schedules/{schedule['schedule_id']}").json["status"] == "deleted"
    assert [s["schedule_id"] for s in client.get("/api/schedules").json["schedules"]] == [cron["schedule_id"]]
    assert client.delete(f"/api/schedules/{schedule['schedule_id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**INTERVAL, "interval_seconds": None}, "body"),
        ({**INTERVAL, "cron": "* * * * *"}, "body"),
        ({**INTERVAL, "interval_seconds": None, "cron": "every day"}, "cron"),
        ({**INTERVAL, "interval_seconds": 0}, "interval_seconds"),
        ({**INTERVAL, "task_type": "nope"}, "task_type"),
        ({**INTERVAL, "parameters": {}}, "parameters.data"),
    ],
)
def test_bad_schedules_are_400(client, body, field):
    response = client.post("/api/schedules", json=body)
    assert response.status_code == 400
    assert response.json["fields"][0]["field"] == field


def test_due_schedule_fires_a_fresh_tagged_task(client, fake_redis, drain):
    schedule_id = client.post("/api/schedules", json=INTERVAL).json["schedule_id"]
    # What rq-scheduler does when the schedule is due: put its job on the schedules queue.

    job = JSONJob.fetch(schedule_id, connection=fake_redis)
    Queue(SCHEDULES_QUEUE, connection=fake_redis, serializer=SERIALIZER).enqueue_job(job)

    SimpleWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER).work(burst=True)
    [run] = client.get("/api/tasks?state=SUCCESS").json["tasks"]
    assert run["schedule_id"] == schedule_id
    assert run["task_id"] != schedule_id
    assert run["task_type"] == "data_processing"
    submitted = metrics.snapshot(fake_redis).submitted
    assert sum(n for labels, n in submitted.items() if "data_processing" in labels) == 1  # the run counts
