"""enqueue_batch: one transaction, idempotent by task id, scheduled tasks, extra commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from rq.defaults import CALLBACK_TIMEOUT
from rq.job import Job, JobStatus

from core.model import TaskRequest
from core.storage.enqueue import enqueue_batch
from core.storage.queues import SERIALIZER


def request(task_id, priority="normal", run_at=None):
    return TaskRequest(task_id, "data_processing", priority, {"data": [1]}, "2026-01-01T00:00:00+00:00", run_at=run_at)


def test_creates_ordinary_rq_jobs_on_their_queues(fake_redis, settings, client, drain):
    created = enqueue_batch(fake_redis, settings, [request("a", "high"), request("b", "low"), request("c", "low")])
    assert created == ["a", "b", "c"]
    assert fake_redis.lrange("rq:queue:high_priority", 0, -1) == [b"a"]
    assert fake_redis.lrange("rq:queue:low_priority", 0, -1) == [b"b", b"c"]
    job = Job.fetch("b", connection=fake_redis, serializer=SERIALIZER)
    assert job.get_status() == "queued"
    assert job.meta["priority"] == "low"
    assert job.retries_left == 3
    drain()
    assert client.get("/api/tasks/b").json["state"] == "SUCCESS"


def test_created_at_is_when_the_api_accepted_it_and_enqueued_at_when_it_was_queued(fake_redis, settings, client):
    later = datetime.now(UTC) + timedelta(hours=1)
    enqueue_batch(fake_redis, settings, [request("now"), request("later", run_at=later)])
    accepted = datetime(2026, 1, 1, tzinfo=UTC)
    for task_id in ("now", "later"):
        job = Job.fetch(task_id, connection=fake_redis, serializer=SERIALIZER)
        assert job.created_at == accepted
        assert "submitted_at" not in job.meta  # once, as created_at: ~50 bytes less per task
        assert client.get(f"/api/tasks/{task_id}").json["status"]["created_at"] == accepted.isoformat()
    enqueued = Job.fetch("now", connection=fake_redis, serializer=SERIALIZER).enqueued_at
    assert enqueued is not None and enqueued > accepted


def test_existing_ids_and_repeats_in_a_batch_are_skipped(fake_redis, settings):
    enqueue_batch(fake_redis, settings, [request("a")])
    created = enqueue_batch(fake_redis, settings, [request("a"), request("b"), request("b")])
    assert created == ["b"]
    assert fake_redis.lrange("rq:queue:normal_priority", 0, -1) == [b"a", b"b"]


def test_future_run_at_goes_to_the_scheduled_registry(fake_redis, settings):
    later = datetime.now(UTC) + timedelta(hours=1)
    enqueue_batch(fake_redis, settings, [request("later", run_at=later)])
    assert fake_redis.llen("rq:queue:normal_priority") == 0
    assert fake_redis.zscore("rq:scheduled:normal_priority", "later") == int(later.timestamp())


@pytest.fixture
def watched(monkeypatch) -> list[tuple]:
    """The keys of each WATCH an enqueue sends (the transaction way), in order."""
    from redis.client import Pipeline

    calls: list[tuple] = []
    real_watch = Pipeline.watch

    def watch(self, *names):
        calls.append(names)
        return real_watch(self, *names)

    monkeypatch.setattr(Pipeline, "watch", watch)
    return calls


def test_a_first_delivery_is_one_script_and_a_redelivery_watches(fake_redis, settings, watched):
    also = lambda pipe: pipe.incr("also")  # noqa: E731
    assert enqueue_batch(fake_redis, settings, [request("a"), request("b")], also=also) == ["a", "b"]
    assert watched == []  # none existed: created by IF_ABSENT in one round trip
    assert enqueue_batch(fake_redis, settings, [request("b"), request("c")], also=also) == ["c"]
    assert watched == [("rq:job:b", "rq:job:c")]  # b existed: the script wrote nothing, the transaction did
    assert fake_redis.get("also") == b"2"  # once per call, whichever way
    assert fake_redis.lrange("rq:queue:normal_priority", 0, -1) == [b"a", b"b", b"c"]


def test_a_batch_too_long_for_one_script_goes_the_transaction_way(fake_redis, settings, monkeypatch, watched):
    from core.storage import enqueue

    monkeypatch.setattr(enqueue, "SCRIPT_MAX_WORDS", 3)  # every HSET of a job is longer
    assert enqueue_batch(fake_redis, settings, [request(i) for i in "abcd"]) == list("abcd")
    assert len(watched) == 1
    assert fake_redis.lrange("rq:queue:normal_priority", 0, -1) == [b"a", b"b", b"c", b"d"]


def test_the_pipeline_keeps_the_commands_it_queued(fake_redis):
    # core.storage.enqueue._created_if_absent reads them back: redis-py's Pipeline.command_stack.
    pipe = fake_redis.pipeline(transaction=False)
    pipe.hset("h", mapping={"f": 1})
    pipe.rpush("l", "x", "y")
    assert [words for words, _options in pipe.command_stack] == [("HSET", "h", "f", 1), ("RPUSH", "l", "x", "y")]


def test_extra_commands_run_in_the_same_transaction(fake_redis, settings):
    enqueue_batch(fake_redis, settings, [request("a")], also=lambda pipe: pipe.set("marker", "1"))
    assert fake_redis.get("marker") == b"1"


@pytest.mark.parametrize("max_retries", [None, 0, 5])
def test_fast_job_hash_matches_rqs_own(fake_redis, settings, max_retries):
    from rq import Queue

    from core import registry
    from core.storage.enqueue import RUNNER, job_hash, job_options

    spec = registry.get("data_processing")
    task = TaskRequest("same-id", "data_processing", "low", {"data": [1, {"a": "é"}]}, "2026-01-01", max_retries)
    queue = Queue("low_priority", connection=fake_redis, serializer=SERIALIZER)
    options = job_options(settings, spec, task)
    reference = queue.create_job(RUNNER, args=(spec.name, task.parameters), status=JobStatus.QUEUED, **options)
    now = datetime.now(UTC)
    reference.created_at, reference.enqueued_at = datetime(2026, 1, 1, tzinfo=UTC), now  # accepted, then queued
    expected = reference.to_dict()
    actual = job_hash(settings, spec, task, "low_priority", now)
    # Both draw their own retry jitter; compare the schedule's length, then everything else exactly.
    if "retry_intervals" in expected:
        assert len(json.loads(actual.pop("retry_intervals"))) == len(json.loads(expected.pop("retry_intervals")))
    # RQ's empty fields and its default callback timeout are left out (RQ restores them as they were): ~130 bytes
    # of Redis per task.
    assert "" not in actual.values()
    assert expected.pop("failure_callback_timeout") == CALLBACK_TIMEOUT
    assert {k: v.value if hasattr(v, "value") else v for k, v in expected.items() if v != ""} == actual
    restored = Job(task.task_id, connection=fake_redis, serializer=SERIALIZER)
    restored.restore({k: v if isinstance(v, bytes) else str(v).encode() for k, v in actual.items()})
    assert restored.failure_callback_timeout == reference.failure_callback_timeout
