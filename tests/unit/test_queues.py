"""GET /api/queues, pause, resume and empty, on fakeredis with in-process workers (real workers: tests/integration)."""

from __future__ import annotations

import logging

import pytest

from app.keys import create_key
from core.storage import claims, keys, paused
from core.storage.queues import SERIALIZER, all_queues, worker_queues
from jobs.heartbeat import HeartbeatSimpleWorker
from tests.helpers import submit

WORKFLOW = {
    "steps": [{"id": "a", "task_type": "test_echo"}, {"id": "b", "task_type": "test_echo", "depends_on": ["a"]}]
}


@pytest.fixture
def make_client(app, fake_redis):
    def make(scope: str, name: str | None = None):
        client = app.test_client()
        client.api_key = create_key(fake_redis, name or scope, [scope])
        return client

    return make


def queues_by_name(client) -> dict:
    answer = client.get("/api/queues")
    assert answer.status_code == 200
    return {row["name"]: row for row in answer.json["queues"]}


def state_of(client, task_id: str) -> str:
    return client.get(f"/api/tasks/{task_id}").json["state"]


def test_queues_report_depth_workers_age_throughput_and_pause(client, drain):
    done = submit(client, "test_count", priority="high")
    drain()
    waiting = [submit(client, "test_count") for _ in range(3)]
    submit(client, "test_count", priority="low", delay_seconds=600)
    rows = queues_by_name(client)
    assert list(rows) == ["high_priority", "normal_priority", "low_priority"]
    high, normal, low = rows.values()
    assert high["depth"] == {
        "queued": 0,
        "started": 0,
        "scheduled": 0,
        "deferred": 0,
        "finished": 1,
        "failed": 0,
        "canceled": 0,
    }
    assert high["finished_last_minute"] == 1 and high["oldest_queued_age_s"] is None
    assert normal["depth"]["queued"] == len(waiting) and 0 <= normal["oldest_queued_age_s"] < 60
    assert low["depth"]["scheduled"] == 1 and low["depth"]["queued"] == 0
    assert all(row["paused"] is False and row["workers"] == 0 for row in rows.values())
    assert state_of(client, done) == "SUCCESS"


def test_finished_last_minute_counts_only_the_last_minute(client, fake_redis, settings, drain):
    submit(client, "test_count", priority="high")
    drain()
    # A task that ended two minutes ago: its finished entry expires two minutes sooner than a fresh one's.
    ((_member, score),) = fake_redis.zrange(keys.finished_key("high_priority"), 0, -1, withscores=True)
    fake_redis.zadd(keys.finished_key("high_priority"), {b"older": score - 120})
    assert queues_by_name(client)["high_priority"]["finished_last_minute"] == 1
    assert queues_by_name(client)["high_priority"]["depth"]["finished"] == 2


def test_a_paused_queue_is_not_taken_from_until_resumed(client, drain):
    normal = submit(client, "test_count")
    high = submit(client, "test_count", priority="high")
    answer = client.post("/api/queues/normal_priority/pause")
    assert answer.status_code == 200 and answer.json == {"queue": "normal_priority", "paused": True}
    assert queues_by_name(client)["normal_priority"]["paused"] is True
    drain()
    assert state_of(client, high) == "SUCCESS" and state_of(client, normal) == "PENDING"
    answer = client.post("/api/queues/normal_priority/resume")
    assert answer.json == {"queue": "normal_priority", "paused": False}
    drain()
    assert state_of(client, normal) == "SUCCESS"


def test_the_simple_worker_skips_a_paused_queue(client, fake_redis):
    low = submit(client, "test_count", priority="low")
    high = submit(client, "test_count", priority="high")
    client.post("/api/queues/high_priority/pause")
    HeartbeatSimpleWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER).work(burst=True)
    assert state_of(client, low) == "SUCCESS" and state_of(client, high) == "PENDING"


def test_a_job_popped_as_its_queue_is_paused_goes_back_to_the_head(client, fake_redis, monkeypatch):
    first, second = submit(client, "test_count"), submit(client, "test_count")
    worker = HeartbeatSimpleWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER)
    looks = iter([set(), {"normal_priority"}, {"normal_priority"}])  # unpaused when it pops, paused right after
    monkeypatch.setattr(paused, "paused_names", lambda _connection: next(looks))
    assert worker.dequeue_job_and_maintain_ttl(timeout=None) is None
    assert fake_redis.lrange(keys.queue_key("normal_priority"), 0, -1) == [first.encode(), second.encode()]
    assert state_of(client, first) == "PENDING"


def test_the_claim_script_skips_paused_queues(client, fake_redis):
    normal, low = submit(client, "test_count"), submit(client, "test_count", priority="low")
    paused.pause(fake_redis, "normal_priority")
    claimer = claims.Claimer(fake_redis, all_queues(fake_redis))
    got = claimer.claim(10, 0.0, "exec-1", "w1", "stamp")
    assert [(queue.name, job_id) for queue, job_id, _fields in got] == [("low_priority", low)]
    assert fake_redis.lrange(keys.queue_key("normal_priority"), 0, -1) == [normal.encode()]


def test_an_unknown_queue_is_a_404_naming_the_known_ones(client):
    for action in ("pause", "resume", "empty"):
        answer = client.post(f"/api/queues/urgent/{action}")
        assert answer.status_code == 404
        assert answer.json["error"] == "not_found"
        assert "high_priority, normal_priority, low_priority" in answer.json["message"]


def test_empty_drops_queued_tasks_and_their_keys_and_leaves_the_rest(client, fake_redis, drain):
    dropped = [submit(client, "test_count", priority="low") for _ in range(3)]
    delayed = submit(client, "test_count", priority="low", delay_seconds=600)
    other = submit(client, "test_count")
    answer = client.post("/api/queues/low_priority/empty")
    assert answer.status_code == 200
    assert answer.json == {"queue": "low_priority", "removed": 3, "workflow_steps_revoked": 0}
    assert all(client.get(f"/api/tasks/{task_id}").status_code == 404 for task_id in dropped)
    assert not any(fake_redis.exists(keys.job_key(task_id)) for task_id in dropped)
    assert state_of(client, delayed) == "PENDING"
    drain()
    assert state_of(client, other) == "SUCCESS" and fake_redis.get("runs:total") == b"1"
    assert client.post("/api/queues/low_priority/empty").json["removed"] == 0


def test_empty_revokes_a_queued_workflow_step_and_what_waits_on_it(client):
    workflow = client.post("/api/workflows", json=WORKFLOW).json
    answer = client.post("/api/queues/normal_priority/empty").json
    assert answer == {"queue": "normal_priority", "removed": 1, "workflow_steps_revoked": 1}
    status = client.get(f"/api/workflows/{workflow['workflow_id']}").json
    # as when one step is canceled: the steps end REVOKED and the workflow, which cannot succeed now, FAILURE
    assert {entry["state"] for entry in status["steps"].values()} == {"REVOKED"} and status["state"] == "FAILURE"


@pytest.mark.parametrize("action", ["pause", "resume", "empty"])
def test_queue_actions_need_admin_and_are_audited(make_client, action, caplog):
    reader, submitter, admin = make_client("read"), make_client("submit"), make_client("admin", name="ops")
    assert reader.get("/api/queues").status_code == 200
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="taskrelay.audit"):
        assert submitter.post(f"/api/queues/low_priority/{action}").status_code == 403
        assert admin.post(f"/api/queues/low_priority/{action}").status_code == 200
    lines = [r.getMessage() for r in caplog.records if r.name == "taskrelay.audit"]
    assert len(lines) == 1 and lines[0].startswith(f"{action} queue low_priority by key 'ops'")


def test_dead_letters_without_rabbitmq_say_the_ingress_is_not_configured(client, caplog):
    for answer in (client.get("/api/ingress/dead-letters"), client.post("/api/ingress/dead-letters/replay")):
        assert answer.status_code == 409
        assert answer.json["error"] == "ingress_not_configured"
        assert "RABBITMQ_URL is not set" in answer.json["message"]


def test_a_bad_dead_letter_limit_is_a_400_naming_it(client):
    answer = client.get("/api/ingress/dead-letters?limit=-1")
    assert answer.status_code == 400 and answer.json["fields"][0]["field"] == "limit"


def test_a_batch_worker_gives_back_no_claims_for_an_enqueue_on_a_paused_higher_queue(client, fake_redis):
    from jobs.batch_worker import BatchWorker

    submit(client, "test_count", priority="low")
    worker = BatchWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER)
    worker._claim_batch()
    assert [queue.name for _, queue, _ in worker._batch] == ["low_priority"]
    paused.pause(fake_redis, "high_priority")
    worker._on_enqueued({"type": "message", "data": b"high_priority"})  # what the pubsub thread delivers
    assert worker._outranked() is False and worker._announced == frozenset()  # the announcement is dropped
    worker._on_enqueued({"type": "message", "data": b"high_priority"})
    worker._on_enqueued({"type": "message", "data": b"normal_priority"})
    assert worker._outranked() is True  # normal is not paused
    paused.resume(fake_redis, "high_priority")
    worker._announced = frozenset({"high_priority"})
    assert worker._outranked() is True
