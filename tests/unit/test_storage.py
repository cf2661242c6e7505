"""Pins for the RQ storage adapter: the keys it mirrors and the internals it uses are RQ 2.12's own.

If an upgrade of rq moves any of these, a test here fails before anything in Redis goes astray.
"""

from __future__ import annotations

import importlib.metadata
import inspect

import pytest
import rq.job
import rq.registry
import rq.serializers
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.results import Result

from core.storage import claims, keys
from core.storage.places import KINDS, places_of
from core.storage.queues import RESOLVING_MODULES, SERIALIZER, JSONJob


def test_the_adapter_is_written_for_the_pinned_rq():
    assert importlib.metadata.version("rq") == "2.12.0"


def test_mirrored_keys_are_the_ones_rq_builds(fake_redis):
    job = Job.create("jobs.runner.run", id="pin-1", connection=fake_redis, serializer=SERIALIZER)
    assert keys.job_key("pin-1") == job.key
    assert keys.dependents_key("pin-1") == job.dependents_key
    assert keys.dependencies_key("pin-1") == job.dependencies_key
    assert keys.result_key("pin-1") == Result.get_key("pin-1")
    assert keys.execution_key("pin-1", "exec-9") == Execution("exec-9", "pin-1", connection=fake_redis).key
    queue = Queue("pin_queue", connection=fake_redis, serializer=SERIALIZER)
    assert keys.queue_key("pin_queue") == queue.key
    assert keys.finished_key("pin_queue") == queue.finished_job_registry.key
    assert keys.started_key("pin_queue") == queue.started_job_registry.key


def test_places_cover_every_registry_rq_keeps(fake_redis):
    queue = Queue("pin_queue", connection=fake_redis, serializer=SERIALIZER)
    places = places_of(queue)
    assert tuple(places) == KINDS
    registries = {
        queue.started_job_registry.key,
        queue.deferred_job_registry.key,
        queue.scheduled_job_registry.key,
        queue.finished_job_registry.key,
        queue.failed_job_registry.key,
        queue.canceled_job_registry.key,
    }
    assert registries | {queue.key, queue.intermediate_queue_key} == {place.key for place in places.values()}


def test_a_started_member_reads_back_as_the_job_id(fake_redis):
    queue = Queue("pin_queue", connection=fake_redis, serializer=SERIALIZER)
    fake_redis.zadd(queue.started_job_registry.key, {"job-a:exec-1": 1})
    assert places_of(queue)["started"].read(fake_redis, 0, -1) == ["job-a"]


def test_the_internals_claims_use_are_there(fake_redis):
    # claims.perform_claimed pushes the job where get_current_job() finds it, then runs it;
    # claims.record_success sets the status without RQ's separate HSET.
    assert hasattr(rq.job._job_stack, "push") and hasattr(rq.job._job_stack, "pop")
    assert callable(Job._execute)
    job = JSONJob(id="pin-2", connection=fake_redis)
    job._status = JobStatus.FINISHED
    assert job.get_status(refresh=False) == JobStatus.FINISHED
    assert claims._job_stack is rq.job._job_stack


def test_a_claim_marks_its_worker_busy_as_set_state_would(fake_redis):
    # CLAIM writes the worker hash's `state` and claims.Claimer sets Worker._state, RQ's in-memory copy.
    from rq.worker import WorkerStatus

    from jobs.heartbeat import HeartbeatSimpleWorker

    queue = Queue("normal_priority", connection=fake_redis, serializer=SERIALIZER)
    worker = HeartbeatSimpleWorker([queue], connection=fake_redis, serializer=SERIALIZER)
    worker.set_state(WorkerStatus.IDLE)
    claimer = claims.Claimer(fake_redis, [queue], worker)
    assert claimer.claim(5, 9e9, "e", worker.name, "stamp") == []  # nothing claimed: still idle
    assert worker.get_state() == WorkerStatus.IDLE == fake_redis.hget(worker.key, "state").decode()
    queue.enqueue("jobs.runner.run", "x", {}, job_id="busy-1")
    assert len(claimer.claim(5, 9e9, "e", worker.name, "stamp")) == 1
    assert worker.get_state() == WorkerStatus.BUSY == fake_redis.hget(worker.key, "state").decode()
    worker.set_state(WorkerStatus.IDLE)
    assert worker._state == WorkerStatus.IDLE  # the attribute set_state keeps


def _dependency_scene(connection) -> Queue:
    """A finished parent `p` with dependents: ready `a`, `b` waiting on a queued `q` too, `c` tolerating the
    failed `f`, `d` not tolerating it, and a canceled `e`."""
    from rq.job import Dependency

    queue = Queue("normal_priority", connection=connection, serializer=SERIALIZER)
    for job_id in ("p", "q", "f"):
        queue.enqueue("jobs.runner.run", "x", {}, job_id=job_id)
    queue.enqueue("jobs.runner.run", "x", {}, job_id="a", depends_on=["p"])
    queue.enqueue("jobs.runner.run", "x", {}, job_id="b", depends_on=["p", "q"])
    queue.enqueue("jobs.runner.run", "x", {}, job_id="c", depends_on=Dependency(jobs=["p", "f"], allow_failure=True))
    queue.enqueue("jobs.runner.run", "x", {}, job_id="d", depends_on=["p", "f"])
    queue.enqueue("jobs.runner.run", "x", {}, job_id="e", depends_on=["p"])
    connection.hset(keys.job_key("e"), "status", "canceled")
    connection.zrem("rq:deferred:normal_priority", "e")
    connection.hset(keys.job_key("p"), "status", "finished")
    connection.hset(keys.job_key("f"), "status", "failed")
    connection.lrem(queue.key, 0, "p")
    connection.lrem(queue.key, 0, "f")
    return queue


def _outcome(connection) -> dict:
    statuses = {i: connection.hget(keys.job_key(i), "status") for i in "abcde"}
    return {
        "statuses": statuses,
        "queued": sorted(connection.lrange("rq:queue:normal_priority", 0, -1)),
        "deferred": sorted(connection.zrange(keys.DEFERRED_PREFIX + "normal_priority", 0, -1)),
        "queues": connection.smembers(keys.QUEUES_KEY),
        "left_waiting": sorted(connection.smembers(keys.dependents_key("p")) - {b"e"}),
    }


def test_the_release_script_enqueues_what_rqs_enqueue_dependents_does():
    import fakeredis

    from core.storage import dependents

    theirs, ours = (fakeredis.FakeRedis(server=fakeredis.FakeServer()) for _ in range(2))
    queue = _dependency_scene(theirs)
    queue.enqueue_dependents(Job.fetch("p", connection=theirs, serializer=SERIALIZER))
    _dependency_scene(ours)
    assert dependents.release(ours, "p") == 2
    assert _outcome(ours) == _outcome(theirs)
    assert _outcome(ours)["statuses"]["a"] == b"queued"
    assert ours.hget(keys.job_key("a"), "enqueued_at")


def test_rqs_dequeue_blocks_on_the_worker_queue_list_paused_queues_leave(fake_redis):
    # core.storage.paused overrides RQ's private _ordered_queues: RQ must set it once and read it on every
    # dequeue; and a single key would switch RQ to BLMOVE through its intermediate queue (hence the doubling).
    import inspect

    from rq.worker import BaseWorker

    from core.storage import paused
    from core.storage.queues import worker_queues
    from jobs.heartbeat import HeartbeatSimpleWorker

    assert "self._ordered_queues = self.queues[:]" in inspect.getsource(BaseWorker.__init__)
    assert "self._ordered_queues," in inspect.getsource(BaseWorker.dequeue_job_and_maintain_ttl)
    assert "len(queue_keys) == 1" in inspect.getsource(Queue.dequeue_any)
    worker = HeartbeatSimpleWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER)
    for name in ("high_priority", "normal_priority"):
        paused.pause(fake_redis, name)
    assert [q.name for q in worker._ordered_queues] == ["taskrelay_schedules", "low_priority"]
    paused.pause(fake_redis, "low_priority")
    assert [q.name for q in worker._ordered_queues] == ["taskrelay_schedules"] * 2


def test_workers_register_per_queue_where_the_overview_counts_them(fake_redis):
    from rq.worker_registration import WORKERS_BY_QUEUE_KEY

    from core.storage.queues import worker_queues
    from jobs.heartbeat import HeartbeatSimpleWorker

    worker = HeartbeatSimpleWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER)
    worker.register_birth()
    assert fake_redis.smembers(WORKERS_BY_QUEUE_KEY % "low_priority") == {worker.key.encode()}


def _claimed(connection, job_id: str = "pin-ok") -> tuple[Queue, Job, str]:
    """Enqueue one JSON job as the bridge does and claim it as the batch worker does."""
    queue = Queue("normal_priority", connection=connection, serializer=SERIALIZER)
    queue.enqueue("jobs.runner.run", "x", {}, job_id=job_id, result_ttl=60)
    stamp = "2026-01-01T00:00:00.000000Z"
    [(got_queue, got_id, fields)] = claims.Claimer(connection, [queue]).claim(5, 9e9, "exec-1", "w1", stamp)
    assert (got_queue.name, got_id) == (queue.name, job_id)
    return queue, claims.claimed_job(connection, job_id, fields, "w1"), claims.claim_member(job_id, "exec-1")


def test_a_batch_success_reads_back_as_rqs_own(fake_redis):
    # RQ 2.12 restores the RESULT_FIELD of a job hash into Job._result; JSONJob, rq-dashboard (which it replaces
    # there) and the API read it as RQ's latest Result; the registries end where RQ's handle_job_success puts them.
    from datetime import UTC, datetime

    from core.storage.records import latest_results

    queue, job, member = _claimed(fake_redis)
    job.started_at = job.ended_at = datetime.now(UTC)
    outcomes = claims.Outcomes(fake_redis)
    outcomes.success(job, {"answer": 42}, 60, member, queue)
    outcomes.write()

    assert Job.fetch("pin-ok", connection=fake_redis, serializer=SERIALIZER)._result == {"answer": 42}
    read = JSONJob.fetch("pin-ok", connection=fake_redis)
    assert read.get_status() == JobStatus.FINISHED
    assert read.return_value() == {"answer": 42}
    assert read.latest_result().type == Result.Type.SUCCESSFUL
    assert latest_results(fake_redis, ["pin-ok"]) == [{"answer": 42}]
    assert queue.finished_job_registry.get_job_ids() == ["pin-ok"]
    assert fake_redis.zcard(queue.started_job_registry.key) == 0
    assert 0 < fake_redis.ttl(keys.job_key("pin-ok")) <= 60
    assert not fake_redis.exists(keys.result_key("pin-ok"))  # no results stream: that is the ~0.9 KB saved


def test_a_success_rqs_own_worker_wrote_reads_back_from_its_stream(fake_redis):
    from rq import SimpleWorker

    from core.storage.records import latest_results

    queue = Queue("normal_priority", connection=fake_redis, serializer=SERIALIZER)
    queue.enqueue("builtins.abs", -7, job_id="pin-rq")
    SimpleWorker([queue], connection=fake_redis, serializer=SERIALIZER).work(burst=True)
    assert fake_redis.exists(keys.result_key("pin-rq"))
    assert JSONJob.fetch("pin-rq", connection=fake_redis).return_value() == 7
    assert latest_results(fake_redis, ["pin-rq"]) == [7]


def test_registry_scores_are_rqs(fake_redis):
    from rq.registry import FinishedJobRegistry

    registry = FinishedJobRegistry("pin_queue", connection=fake_redis, serializer=SERIALIZER)
    for ttl in (60, -1):
        job = Job.create("jobs.runner.run", id=f"pin-{ttl}", connection=fake_redis, serializer=SERIALIZER)
        registry.add(job, ttl)
        ours = claims.registry_score(ttl)
        assert fake_redis.zscore(registry.key, job.id) == (float(ours) if ours != "+inf" else float("inf"))


def test_the_claim_reads_each_job_once_and_skips_purged_ones(fake_redis):
    queue = Queue("normal_priority", connection=fake_redis, serializer=SERIALIZER)
    for job_id in ("c-1", "c-2", "c-3"):
        queue.enqueue("jobs.runner.run", "x", {}, job_id=job_id)
    fake_redis.delete(keys.job_key("c-2"))  # purged while queued
    claimed = claims.Claimer(fake_redis, [queue]).claim(5, 123.0, "e", "w1", "stamp")
    assert [job_id for _, job_id, _ in claimed] == ["c-1", "c-3"]
    assert fake_redis.zrange(queue.started_job_registry.key, 0, -1, withscores=True) == [
        (b"c-1:e", 123.0),
        (b"c-3:e", 123.0),
    ]
    assert not fake_redis.exists(keys.job_key("c-2"))
    job = claims.claimed_job(fake_redis, "c-1", claimed[0][2], "w1")
    assert (job.func_name, job.args, job.origin) == ("jobs.runner.run", ["x", {}], "normal_priority")
    assert fake_redis.hget(keys.job_key("c-1"), "status") == b"started"


def test_rqs_own_workers_ignore_the_stop_jobs_command():
    # A purge sends places.STOP_JOBS to every worker, then RQ's stop-job per job; RQ's workers act on the latter.
    from rq.command import handle_command

    from core.storage.places import STOP_JOBS

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"RQ acted on {STOP_JOBS}: {name}")

    handle_command(Untouchable(), {"command": STOP_JOBS, "job_ids": ["a", "b"]})  # type: ignore[arg-type]


def test_claimed_stamps_parse_as_rqs_own():
    from datetime import UTC, datetime

    from rq.utils import utcformat, utcparse

    for stamp in (utcformat(datetime.now(UTC)), "2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000001Z"):
        assert claims.parse_stamp(stamp.encode()) == utcparse(stamp)
        assert claims.parse_stamp(stamp.encode()).tzinfo is not None


def test_rq_resolves_our_serializer_without_its_protocol_check(fake_redis):
    """core.storage.queues answers RQ's resolve_serializer for SERIALIZER at once; RQ's own check agrees with it."""
    original = rq.serializers.resolve_serializer
    assert original(SERIALIZER) is SERIALIZER  # what the skipped check returns
    for module in RESOLVING_MODULES:  # each calls it by its module-level name (what the wrapper replaces)
        assert module.resolve_serializer.__wrapped__ is original, module.__name__
        assert "resolve_serializer(" in inspect.getsource(module)
    assert rq.job.resolve_serializer("json") is rq.serializers.JSONSerializer  # anything else is still checked
    with pytest.raises(NotImplementedError):
        rq.job.resolve_serializer(object())  # type: ignore[arg-type]
    queue = Queue("q", connection=fake_redis, serializer=SERIALIZER)
    job = Job.create("jobs.runner.run", connection=fake_redis, serializer=SERIALIZER)
    registry = rq.registry.FinishedJobRegistry(queue=queue)
    assert queue.serializer is job.serializer is registry.serializer is SERIALIZER
