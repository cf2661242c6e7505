"""Where RQ 2.12 keeps things in Redis, derived from RQ's own classes wherever RQ exposes them.

RQ builds several keys inline rather than through a method (the results stream,
the executions, a job's dependencies); those are mirrored here and compared with
what RQ itself writes by tests/unit/test_storage.py.
"""

from __future__ import annotations

from rq.executions import ExecutionRegistry
from rq.job import Job
from rq.queue import Queue
from rq.registry import FinishedJobRegistry, StartedJobRegistry
from rq.results import Result
from rq.worker import Worker

JOB_PREFIX = Job.redis_job_namespace_prefix
"""`rq:job:`; a job hash is JOB_PREFIX + id."""
QUEUE_PREFIX = Queue.redis_queue_namespace_prefix
"""`rq:queue:`; a queue's list is QUEUE_PREFIX + name."""
WORKERS_KEY = Worker.redis_workers_keys
"""The set of every registered worker's key."""
QUEUES_KEY = Queue.redis_queues_keys
"""The set of every queue's key (what `rq info` and rq-dashboard list)."""

SUMMARY_FIELDS = ("status", "meta", "description", "origin", "created_at", "started_at", "ended_at")
"""The job hash fields a list entry needs, read with one HMGET (no Job object: the list's hot path)."""
FILTER_FIELDS = ("description", "status", "meta")
"""The job hash fields a list filter reads: task type, RQ status and meta (for PENDING vs RETRY)."""
EXECUTION_PREFIX = "rq:execution:"
"""RQ builds an execution's key inline in Execution.key; tests/unit/test_storage.py compares the two."""
ENQUEUED_CHANNEL = "taskrelay:enqueued"
"""Pub/sub channel an enqueue announces its highest queue on (above the lowest): batch workers holding
claims of a lower queue give them back (jobs/batch_worker.py)."""
ORIGIN_FIELD = "origin"
"""The job hash field naming the queue the job belongs to."""
WORKER_FIELD = "worker_name"
"""The job hash field naming the worker that runs (or ran) it."""
RESULT_FIELD = "result"
"""The job hash field RQ 2.12 still restores into `Job._result`: where the batch worker writes a success's return
value (serialized), instead of RQ's one-entry results stream (~0.9 KB per task); JSONJob.latest_result reads it."""


def job_key(job_id: str) -> str:
    """Return the key of the job hash of `job_id`."""
    return Job.key_for(job_id)


def queue_key(queue_name: str) -> str:
    """Return the key of the list of jobs waiting in `queue_name`."""
    return QUEUE_PREFIX + queue_name


def started_key(queue_name: str) -> str:
    """Return the key of `queue_name`'s started registry (members `<job id>:<execution id>`, scored by lapse)."""
    return StartedJobRegistry.key_template.format(queue_name)


def finished_key(queue_name: str) -> str:
    """Return the key of `queue_name`'s finished registry (a sorted set of job ids by expiry)."""
    return FinishedJobRegistry.key_template.format(queue_name)


def result_key(job_id: str) -> str:
    """Return the key of `job_id`'s results stream (`job.delete()` leaves it behind)."""
    return Result.get_key(job_id)


def executions_key(job_id: str) -> str:
    """Return the key of the sorted set of `job_id`'s execution ids."""
    return ExecutionRegistry.key_template.format(job_id)


def execution_key(job_id: str, execution_id: str) -> str:
    """Return the key of one execution hash (RQ builds it inline in Execution.key)."""
    return f"{EXECUTION_PREFIX}{job_id}:{execution_id}"


def dependents_key(job_id: str) -> str:
    """Return the key of the set of jobs waiting on `job_id`."""
    return Job.dependents_key_for(job_id)


def dependencies_key(job_id: str) -> str:
    """Return the key of the set of jobs `job_id` waits on, spelled as RQ 2.12 spells it (with a double colon)."""
    return f"{JOB_PREFIX}:{job_id}:dependencies"


DEFERRED_PREFIX = "rq:deferred:"
"""RQ's deferred registry of queue Q is DEFERRED_PREFIX + Q (DeferredJobRegistry.key)."""
WAITING_PREFIX = "taskrelay:waiting:"


def waiting_key(task_id: str) -> str:
    """Return the key counting the parents of a waiting workflow step that have not finished yet (Taskrelay's)."""
    return WAITING_PREFIX + task_id


KEPT_PREFIX = "taskrelay:kept:"


def kept_key(state: str, task_type: str) -> str:
    """Return the index of the ended tasks of `task_type` that carry a history count for `state` (Taskrelay's:
    core/storage/retention.py)."""
    return f"{KEPT_PREFIX}{state}:{task_type}"


def job_keys(job_id: str, execution_ids: list[str]) -> list[str]:
    """Return every key RQ may hold for `job_id`, given its execution ids."""
    keys = [job_key(job_id), dependents_key(job_id), dependencies_key(job_id), result_key(job_id)]
    keys.append(executions_key(job_id))
    keys += [execution_key(job_id, execution_id) for execution_id in execution_ids]
    return keys
