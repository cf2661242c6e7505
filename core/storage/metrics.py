"""Taskrelay's metrics in Redis: counters every process adds to, and the gauges read at scrape time.

Counters are kept in Redis, not in a process, so that every API process,
worker and Lambda container adds to the same numbers (exact across all of
them). Keys, each a hash whose fields are JSON lists of label values:

    taskrelay:metrics:submitted      [task_type, priority] -> tasks accepted by POST /api/tasks
    taskrelay:metrics:finished       [task_type, queue, state] -> tasks that ended (SUCCESS, FAILURE, REVOKED)
    taskrelay:metrics:retries        [task_type] -> failed attempts that will be retried
    taskrelay:metrics:runtime        [task_type, le] -> successes whose run took at most `le` seconds and
                                     more than the bucket below (not cumulative; summed at render)
    taskrelay:metrics:runtime_sum    [task_type] -> total seconds of those runs (HINCRBYFLOAT)

Writers never send a command of their own: a `Tally` gathers increments in
memory and adds one HINCRBY per distinct field to a pipeline the caller sends
anyway (the enqueue's transaction, the batch worker's success pipeline).
"""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.client import Pipeline
from rq.job import Job

from core import accepted
from core.model import TaskRequest
from core.storage.keys import WORKERS_KEY
from core.storage.queues import all_queues

SUBMITTED_KEY = "taskrelay:metrics:submitted"
FINISHED_KEY = "taskrelay:metrics:finished"
RETRIES_KEY = "taskrelay:metrics:retries"
RUNTIME_KEY = "taskrelay:metrics:runtime"
RUNTIME_SUM_KEY = "taskrelay:metrics:runtime_sum"
WAIT_KEY = "taskrelay:metrics:wait"
WAIT_SUM_KEY = "taskrelay:metrics:wait_sum"
COUNTER_KEYS = (SUBMITTED_KEY, FINISHED_KEY, RETRIES_KEY, RUNTIME_KEY, RUNTIME_SUM_KEY, WAIT_KEY, WAIT_SUM_KEY)

RUNTIME_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Upper bounds of the runtime and queue-wait histograms' buckets, in seconds (prometheus_client's defaults, up
to 5 minutes); +Inf is added above them. Fixed: changing them splits the stored counts."""
INF = "+Inf"
QUEUE_STATES = ("queued", "started", "scheduled", "deferred", "failed")
"""The states of taskrelay_queue_length: the queue's list and four of RQ's registries (started counts claimed)."""


@functools.lru_cache(maxsize=4096)
def _field(*labels: str) -> str:
    """Return the hash field of one label set (JSON); remembered: labels are few (task types, queues, states,
    buckets), and a finished task needs three of them."""
    return json.dumps(labels, separators=(",", ":"))


def _labels(raw: bytes | str) -> tuple[str, ...]:
    return tuple(json.loads(raw))


def bucket_of(seconds: float) -> str:
    """Return the `le` label of the histogram bucket `seconds` falls in."""
    for bound in RUNTIME_BUCKETS_S:
        if seconds <= bound:
            return repr(bound)
    return INF


@dataclass
class Tally:
    """Increments gathered in memory until `write` adds them to a pipeline (one command per distinct field)."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    sums: dict[tuple[str, str], float] = field(default_factory=dict)

    def submitted(self, task_type: str, priority: str, n: int = 1) -> None:
        self.counts[(SUBMITTED_KEY, _field(task_type, priority))] += n

    def finished(
        self, task_type: str, queue: str, state: str, runtime_s: float | None = None, waited_s: float | None = None
    ) -> None:
        """Count one task that ended in `state`; `runtime_s` and `waited_s` (successes: how long it ran, and
        waited in its queue before it started) go into their histograms."""
        self.counts[(FINISHED_KEY, _field(task_type, queue, state))] += 1
        for seconds, histogram, sums in ((runtime_s, RUNTIME_KEY, RUNTIME_SUM_KEY), (waited_s, WAIT_KEY, WAIT_SUM_KEY)):
            if seconds is not None:
                self.counts[(histogram, _field(task_type, bucket_of(seconds)))] += 1
                key = (sums, _field(task_type))
                self.sums[key] = self.sums.get(key, 0.0) + seconds

    def retried(self, task_type: str) -> None:
        self.counts[(RETRIES_KEY, _field(task_type))] += 1

    def __bool__(self) -> bool:
        return bool(self.counts or self.sums)

    def write(self, pipe: Pipeline | redis.Redis) -> None:
        """Add every gathered increment to `pipe` (again if called again: a retried transaction needs them)."""
        for (key, name), n in self.counts.items():
            if n:
                pipe.hincrby(key, name, n)
        for (key, name), seconds in self.sums.items():
            pipe.hincrbyfloat(key, name, round(seconds, 6))

    def clear(self) -> None:
        """Forget what was gathered (once written)."""
        self.counts.clear()
        self.sums.clear()

    @classmethod
    def of_submitted(cls, requests: list[TaskRequest]) -> Tally:
        """Return the submitted counts of `requests`."""
        tally = cls()
        for request in requests:
            tally.submitted(request.task_type, request.priority)
        return tally


def submitted_field(task_type: str, priority: str) -> tuple[str, str]:
    """Return the hash and field that count a submission of `task_type` at `priority` (for a Lua script that counts
    one in its own transaction: core.storage.requeue)."""
    return SUBMITTED_KEY, _field(task_type, priority)


def task_type_of(job: Job) -> str:
    """Return the task type label of `job` (its meta's, else its description)."""
    return str((job.meta or {}).get("task_type") or job.description or "unknown")


def runtime_of(job: Job) -> float | None:
    """Return how long `job`'s last run took, in seconds, from the times RQ stamped on it (None if unstamped)."""
    if job.started_at is None or job.ended_at is None:
        return None
    return max(0.0, (job.ended_at - job.started_at).total_seconds())


def waited_of(job: Job) -> float | None:
    """Return how long `job` waited in its queue before its last run started, in seconds (None if unstamped):
    from its last enqueue (a retry's own) to its start."""
    if job.enqueued_at is None or job.started_at is None:
        return None
    return max(0.0, (job.started_at - job.enqueued_at).total_seconds())


def record(connection: redis.Redis, tally: Tally) -> None:
    """Write `tally` in one round trip of its own (paths with no pipeline to ride on: failures, simple workers)."""
    if tally:
        pipe = connection.pipeline(transaction=False)
        tally.write(pipe)
        pipe.execute()


TAKE_BACK = (
    "for i = 1, #ARGV, 2 do "
    "if redis.call('HINCRBY', KEYS[1], ARGV[i], -tonumber(ARGV[i + 1])) <= 0 then "
    "redis.call('HDEL', KEYS[1], ARGV[i]) end "
    "end"
)
"""Decrement fields of hash KEYS[1] (ARGV: field, amount, ...), dropping those back at zero: a refusal leaves no
trace."""


def forget_submitted(pipe: Pipeline | redis.Redis, requests: list[TaskRequest]) -> None:
    """Take back the submitted counts of `requests`, refused by the ingress after they were counted (one command)."""
    args = [part for (_, name), n in Tally.of_submitted(requests).counts.items() for part in (name, n)]
    if args:
        pipe.eval(TAKE_BACK, 1, SUBMITTED_KEY, *args)


@dataclass
class Snapshot:
    """What a scrape renders: the counters as stored, and the gauges read at the same moment."""

    submitted: dict[tuple[str, ...], int]
    finished: dict[tuple[str, ...], int]
    retries: dict[tuple[str, ...], int]
    runtime: dict[str, dict[str, int]]
    """task type -> le -> count in that bucket alone."""
    runtime_sum: dict[str, float]
    wait: dict[str, dict[str, int]]
    """task type -> le -> count in that bucket alone: how long successful tasks waited before they started."""
    wait_sum: dict[str, float]
    queue_length: dict[tuple[str, str], int]
    """(queue, state) -> tasks."""
    workers: dict[str, int]
    """worker state (idle, busy, suspended...) -> workers."""
    bridge_lag_s: float
    """Age of the oldest task accepted by the API and not yet moved into RQ by the bridge; 0 when none."""


def _ints(raw: dict[Any, Any]) -> dict[tuple[str, ...], int]:
    return {_labels(name): int(value) for name, value in raw.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def snapshot(connection: redis.Redis, now: float | None = None) -> Snapshot:
    """Read every counter and gauge: one pipelined round trip, and a second for the workers' states."""
    queues = all_queues(connection)
    pipe = connection.pipeline(transaction=False)
    for key in COUNTER_KEYS:
        pipe.hgetall(key)
    for queue in queues:
        pipe.llen(queue.key)
        for registry in (
            queue.started_job_registry,
            queue.scheduled_job_registry,
            queue.deferred_job_registry,
            queue.failed_job_registry,
        ):
            pipe.zcard(registry.key)
    pipe.smembers(WORKERS_KEY)
    for key in accepted.ALL_ZSET_KEYS:
        pipe.zrange(key, 0, 0, withscores=True)
    replies: list[Any] = pipe.execute()
    submitted, finished, retries, runtime_raw, sums_raw, wait_raw, wait_sums_raw = replies[: len(COUNTER_KEYS)]
    rest = replies[len(COUNTER_KEYS) :]
    queue_length = {}
    for queue in queues:
        for state in QUEUE_STATES:
            queue_length[(queue.name, state)] = int(rest.pop(0))
    worker_keys = sorted(rest.pop(0))
    oldest = [entry[0][1] for entry in rest if entry]
    now = time.time() if now is None else now
    return Snapshot(
        submitted=_ints(submitted),
        finished=_ints(finished),
        retries=_ints(retries),
        runtime=_buckets(runtime_raw),
        runtime_sum=_sums(sums_raw),
        wait=_buckets(wait_raw),
        wait_sum=_sums(wait_sums_raw),
        queue_length=queue_length,
        workers=_worker_states(connection, worker_keys),
        bridge_lag_s=max(0.0, now - min(oldest)) if oldest else 0.0,
    )


def _buckets(raw: dict[Any, Any]) -> dict[str, dict[str, int]]:
    """Return a stored histogram as task type -> le -> count in that bucket alone."""
    per_type: dict[str, dict[str, int]] = {}
    for (task_type, le), n in _ints(raw).items():
        per_type.setdefault(task_type, {})[le] = n
    return per_type


def _sums(raw: dict[Any, Any]) -> dict[str, float]:
    """Return a stored histogram's sums as task type -> seconds."""
    return {_labels(name)[0]: float(value) for name, value in raw.items()}


def _worker_states(connection: redis.Redis, worker_keys: list[Any]) -> dict[str, int]:
    if not worker_keys:
        return {}
    pipe = connection.pipeline(transaction=False)
    for key in worker_keys:
        pipe.hget(key, "state")
    states: Counter[str] = Counter(_text(state) for state in pipe.execute() if state)  # None: its hash expired
    return dict(states)


def delete_all(connection: redis.Redis) -> None:
    """Drop every counter (tests; a purge keeps them: counters only ever go up)."""
    connection.delete(*COUNTER_KEYS)
