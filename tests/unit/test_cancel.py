"""POST /api/tasks/{id}/cancel for tasks that are not running (fakeredis; running tasks: tests/integration)."""

from __future__ import annotations

from core import accepted
from core.model import TaskRequest
from core.storage import keys
from core.storage.enqueue import enqueue_batch
from core.storage.places import places_of
from core.storage.queues import get_queue
from tests.helpers import submit

REVOKED_MESSAGE = "Task has been revoked"


def cancel(client, task_id: str):
    return client.post(f"/api/tasks/{task_id}/cancel")


def test_a_queued_task_is_revoked_and_never_runs(client, fake_redis, drain):
    task_id = submit(client, "test_count")
    answer = cancel(client, task_id)
    assert answer.status_code == 200
    assert answer.json == {
        "task_id": task_id,
        "state": "REVOKED",
        "status": "revoked",
        "message": "Task has been revoked",
    }
    assert fake_redis.llen(keys.queue_key("normal_priority")) == 0
    drain()
    status = client.get(f"/api/tasks/{task_id}").json
    assert status["state"] == "REVOKED" and status["status"]["status"] == "revoked"
    assert status["status"]["attempts"] == 0 and status["status"]["ended_at"]
    assert fake_redis.get("runs:total") is None
    assert places_of(get_queue(fake_redis, "normal"))["canceled"].read(fake_redis, 0, -1) == [task_id]


def test_a_delayed_task_is_revoked(client, fake_redis):
    task_id = submit(client, delay_seconds=600, priority="low")
    assert cancel(client, task_id).status_code == 200
    assert fake_redis.zcard(places_of(get_queue(fake_redis, "low"))["scheduled"].key) == 0
    assert client.get(f"/api/tasks/{task_id}").json["state"] == "REVOKED"


def test_a_retrying_task_is_revoked_between_attempts(client, fake_redis):
    from core.storage.queues import SERIALIZER, worker_queues
    from jobs.batch_worker import BatchWorker

    task_id = submit(client, "test_flaky", {"succeed_on": 3})
    worker = BatchWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER)
    job, queue = worker.dequeue_job_and_maintain_ttl(timeout=1)
    worker.execute_job(job, queue)  # attempt 1 fails; with no back-off the retry is queued again
    assert client.get(f"/api/tasks/{task_id}").json["state"] == "RETRY"
    assert cancel(client, task_id).status_code == 200
    status = client.get(f"/api/tasks/{task_id}").json
    assert status["state"] == "REVOKED" and status["status"]["attempts"] == 1


def test_a_finished_task_answers_409_with_its_state(client, drain):
    task_id = submit(client)
    drain()
    answer = cancel(client, task_id)
    assert answer.status_code == 409
    assert answer.json["error"] == "task_finished" and answer.json["state"] == "SUCCESS"
    assert "already ended in state SUCCESS" in answer.json["message"]
    assert client.get(f"/api/tasks/{task_id}").json["state"] == "SUCCESS"  # untouched


def test_revoking_twice_answers_409_revoked_and_unknown_ids_404(client):
    task_id = submit(client)
    assert cancel(client, task_id).status_code == 200
    second = cancel(client, task_id)
    assert second.status_code == 409 and second.json["state"] == "REVOKED"
    assert cancel(client, "never-submitted").status_code == 404


def test_the_list_filters_revoked_tasks(client):
    kept, revoked = submit(client), submit(client)
    cancel(client, revoked)
    listed = client.get("/api/tasks?state=REVOKED").json
    assert [task["task_id"] for task in listed["tasks"]] == [revoked]
    assert listed["tasks"][0]["state"] == "REVOKED"
    assert kept not in [t["task_id"] for t in client.get("/api/tasks?type=completed").json["tasks"]]


def test_a_task_still_in_the_rabbitmq_ingress_is_revoked_and_the_bridge_skips_it(client, fake_redis, settings):
    request = TaskRequest("in-ingress-1", "test_count", "high", {}, "2026-12-03T00:00:00+00:00")
    accepted.remember(fake_redis, [request])  # what RabbitIngress records before it publishes
    assert client.get("/api/tasks/in-ingress-1").json["status"]["status"] == "accepted"
    assert cancel(client, "in-ingress-1").status_code == 200
    assert enqueue_batch(fake_redis, settings, [request], also=lambda pipe: accepted.forget(pipe, [request])) == []
    assert fake_redis.llen(keys.queue_key("high_priority")) == 0
    assert client.get("/api/tasks/in-ingress-1").json["state"] == "REVOKED"
    assert accepted.get(fake_redis, "in-ingress-1") is None


def test_a_task_revoked_while_running_is_not_retried_recorded_or_notified(client, fake_redis, monkeypatch):
    from core.storage.records import fetch_job
    from jobs import notify, runner
    from jobs.interrupt import TaskRevoked

    sent: list = []
    monkeypatch.setattr(notify, "task_failed", lambda *args: sent.append(args))
    job = fetch_job(fake_redis, submit(client, "test_flaky", max_retries=3))
    assert job is not None
    job.meta["attempts"] = 1
    runner.on_failure(job, fake_redis, TaskRevoked, TaskRevoked("canceled"), None)
    assert job.retries_left == 0 and not job.meta.get("errors") and sent == []
    runner.on_failure(job, fake_redis, RuntimeError, RuntimeError("boom"), None)  # the same job failing for real
    assert job.meta["errors"][-1]["type"] == "RuntimeError" and len(sent) == 1


def test_many_waiting_tasks_are_canceled_together_each_answering_what_it_found(client, fake_redis, drain):
    from core.storage.cancel import cancel_waiting_many
    from core.storage.metrics import snapshot

    finished = submit(client, "test_echo", priority="high")
    drain()
    queued = [submit(client, "test_count") for _ in range(2)]
    normal, high = get_queue(fake_redis, "normal"), get_queue(fake_redis, "high")
    jobs = [(task_id, normal, 60) for task_id in queued] + [(finished, high, 60), ("never-was", normal, 60)]
    assert cancel_waiting_many(fake_redis, jobs) == ["done", "done", "finished", "missing"]
    assert sorted(places_of(normal)["canceled"].read(fake_redis, 0, -1)) == sorted(queued)
    assert fake_redis.llen(keys.queue_key("normal_priority")) == 0
    assert 0 < fake_redis.ttl(keys.job_key(queued[0])) <= 60  # kept for its failure TTL, as one cancel does
    revoked = {labels: n for labels, n in snapshot(fake_redis).finished.items() if "REVOKED" in labels}
    assert sum(revoked.values()) == 2, revoked
