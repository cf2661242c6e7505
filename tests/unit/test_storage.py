"""Pins for the RQ storage adapter: the keys it mirrors and the internals it uses are RQ 2.12's own.

If an upgrade of rq moves any of these, a test here fails before anything in Redis goes astray.
"""

from __future__ import annotations

import importlib.metadata

import rq.job
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.results import Result

from core.storage import claims, keys
from core.storage.places import KINDS, places_of
from core.storage.queues import SERIALIZER, JSONJob


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
