"""Cancel a task in RQ's storage: atomically while it waits, by a worker while it runs, or before it reaches RQ.

A canceled job keeps RQ's own shape: status `canceled`, an `ended_at`, and a
place in its queue's canceled registry for FAILURE_TTL_S (so rq-dashboard and
`rq info` show it); the API reports it as REVOKED.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import utcformat

from core import accepted, registry
from core.model import TaskRequest
from core.settings import Settings
from core.storage import metrics
from core.storage.enqueue import job_hash
from core.storage.keys import job_key
from core.storage.places import places_of
from core.storage.queues import get_queue
from core.storage.records import write_once

CANCEL_WAITING = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'queued' or status == 'scheduled' or status == 'deferred' then
  redis.call('LREM', KEYS[2], 0, ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', ARGV[3])
  redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
  return {'done', redis.call('HGET', KEYS[1], 'description') or ''}
end
return status
"""
"""KEYS: job hash, queue list, scheduled, deferred and canceled registries. ARGV: job id, the canceled entry's
expiry (Unix time), the end stamp, FAILURE_TTL_S. Returns ['done', its task type], or the status it found
('missing')."""


CANCEL_CHUNK = 500
"""Most cancels `cancel_waiting_many` sends in one pipeline."""


def cancel_waiting(connection: redis.Redis, queue: Queue, job_id: str, failure_ttl_s: int) -> str:
    """Cancel `job_id` if it is queued, scheduled (a delay or a retry back-off) or deferred; return what it did.

    'done' when it was waiting and is canceled now; otherwise the status it has (started, finished, ...) or 'missing'.
    One Lua call, so a worker cannot take it half-way.
    """
    (outcome,) = cancel_waiting_many(connection, [(job_id, queue, failure_ttl_s)])
    return outcome


def cancel_waiting_many(connection: redis.Redis, jobs: Sequence[tuple[str, Queue, int]]) -> list[str]:
    """`cancel_waiting` for each (job id, its queue, its failure TTL in seconds); return each outcome, in order.

    One Lua call per job, CANCEL_CHUNK of them per pipeline (one round trip; EVAL rather than EVALSHA, which
    redis-py's pipelines precede with a round trip checking the script is loaded), then one for the REVOKED
    counts: a map step's 10,000 elements, or a fan-out's descendants, cost a few dozen round trips rather than
    two per job.
    """
    stamp, now = _stamp(), time.time()
    revoked = metrics.Tally()
    outcomes: list[str] = []
    for start in range(0, len(jobs), CANCEL_CHUNK):
        chunk = jobs[start : start + CANCEL_CHUNK]
        pipe = connection.pipeline(transaction=False)
        for job_id, queue, failure_ttl_s in chunk:
            places = places_of(queue)
            keys = [job_key(job_id), places["queued"].key, places["scheduled"].key, places["deferred"].key]
            keys.append(places["canceled"].key)
            pipe.eval(CANCEL_WAITING, len(keys), *keys, job_id, now + failure_ttl_s, stamp, failure_ttl_s)
        for (_, queue, _), outcome in zip(chunk, pipe.execute(), strict=True):
            if isinstance(outcome, list):  # canceled: counted as REVOKED
                revoked.finished(_text(outcome[1]) or "unknown", queue.name, "REVOKED")
                outcomes.append("done")
            else:
                outcomes.append(_text(outcome))
    metrics.record(connection, revoked)
    return outcomes


SETTLE_STOPPED = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'stopped' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[1], 'status', 'canceled')
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
  return 'canceled'
end
return status
"""
"""KEYS: job hash, failed and canceled registries. ARGV: job id, the canceled entry's expiry (Unix time)."""


def settle_stopped_many(connection: redis.Redis, jobs: Sequence[tuple[str, Queue]], failure_ttl_s: int) -> list[str]:
    """Return each (job id, its queue) job's status, first turning RQ's `stopped` (a fork worker killed it on
    request) into canceled; one round trip for them all."""
    expires = time.time() + failure_ttl_s
    pipe = connection.pipeline(transaction=False)
    for job_id, queue in jobs:
        places = places_of(queue)
        keys = [job_key(job_id), places["failed"].key, places["canceled"].key]
        pipe.eval(SETTLE_STOPPED, len(keys), *keys, job_id, expires)
    return [_text(outcome) for outcome in pipe.execute()] if jobs else []


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stamp() -> str:
    return utcformat(datetime.now(UTC))


def _into_canceled(pipe: Pipeline, queue: Queue, job_id: str, failure_ttl_s: int) -> None:
    """Queue on `pipe` what every canceled job gets: its place in the canceled registry, and its key's expiry."""
    pipe.zadd(places_of(queue)["canceled"].key, {job_id: time.time() + failure_ttl_s})
    pipe.expire(job_key(job_id), failure_ttl_s)


def cancel_accepted(connection: redis.Redis, settings: Settings, task_id: str, record: dict[str, str]) -> bool:
    """Create the job of a task still in the RabbitMQ ingress as canceled; return False if the bridge was first.

    The bridge's enqueue skips an id whose job exists, so the task never runs.
    """
    request = TaskRequest(task_id, record["task_type"], record["priority"], {}, record["submitted_at"])
    queue = get_queue(connection, request.priority)
    mapping = job_hash(settings, registry.get(request.task_type), request, queue.name, datetime.now(UTC))
    mapping.update(status=JobStatus.CANCELED.value, ended_at=_stamp())
    key = job_key(task_id)

    def write(pipe: Pipeline) -> None:
        pipe.hset(key, mapping=mapping)
        _into_canceled(pipe, queue, task_id, settings.failure_ttl_s)
        accepted.forget(pipe, [request])
        revoked = metrics.Tally()
        revoked.finished(request.task_type, queue.name, "REVOKED")
        revoked.write(pipe)

    return write_once(connection, key, write)


def record_canceled(pipe: Pipeline, job: Job, queue: Queue, member: str, failure_ttl_s: int) -> None:
    """Queue on `pipe` the end of a claimed job that was canceled (a worker calls it, running or not)."""
    pipe.hset(job.key, mapping={"status": JobStatus.CANCELED.value, "ended_at": _stamp()})
    pipe.zrem(queue.started_job_registry.key, member)
    _into_canceled(pipe, queue, job.id, failure_ttl_s)
