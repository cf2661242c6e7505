"""The batch worker's way through RQ's storage: claim queued jobs in one Lua call, run a claimed job,
record its success, and hand back the unstarted ones.

A claim registers the job in its queue's started registry (member
`<job id>:<execution id>`, scored by when the claim lapses) and marks the hash
`started`, exactly where RQ's own worker would; so maintenance finds the claims
of a killed worker and handles them as abandoned jobs, and rq-dashboard shows
them running. Several shortcuts here go through RQ's private internals
(`_job_stack`, `Job._execute`, `Job._status`); tests/unit/test_storage.py pins them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue
from rq.defaults import UNSERIALIZABLE_RETURN_VALUE_PAYLOAD
from rq.job import Job, JobStatus, _job_stack
from rq.utils import current_timestamp, utcformat
from rq.worker import BaseWorker, WorkerStatus

from core.storage import retention
from core.storage.keys import JOB_PREFIX, RESULT_FIELD, WORKER_FIELD, finished_key, started_key
from core.storage.paused import PAUSED_KEY
from core.storage.queues import JSONJob

CLAIM_JOBS = """
local function claim_jobs(queue_keys, started_keys, names, paused_key, worker_key, want, expires, execution,
                          worker_name, stamp, job_prefix, drained)
  local claimed = {}
  local count = 0
  for slot = 1, #queue_keys do
    if count >= want then break end
    local key = queue_keys[slot]
    if not drained[key] then
      if redis.call('SISMEMBER', paused_key, names[slot]) == 1 then
        drained[key] = true
      else
        local ids = redis.call('LPOP', key, want - count)
        if not ids or #ids < want - count then drained[key] = true end
        if ids then
          local started = {}  -- score, member, ...: one ZADD into the started registry for the queue's claims
          for _, id in ipairs(ids) do
            local job_key = job_prefix .. id
            local hash = redis.call('HGETALL', job_key)  -- empty: gone (purged) since it was queued
            if #hash > 0 then
              -- it must not expire while it runs
              if redis.call('TTL', job_key) >= 0 then redis.call('PERSIST', job_key) end
              redis.call('HSET', job_key, 'status', 'started', 'worker_name', worker_name, 'started_at', stamp)
              table.insert(started, expires)
              table.insert(started, id .. ':' .. execution)
              table.insert(claimed, {slot, id, hash})
            end
            count = count + 1
          end
          if #started > 0 then redis.call('ZADD', started_keys[slot], unpack(started)) end
        end
      end
    end
  end
  if worker_key and #claimed > 0 then redis.call('HSET', worker_key, 'state', 'busy') end
  return claimed
end
local function flatten(execution, claimed)  -- execution id, then per job: slot, id, hash length, hash...
  local flat = {execution}
  for _, job in ipairs(claimed) do
    table.insert(flat, job[1])
    table.insert(flat, job[2])
    table.insert(flat, #job[3])
    for _, word in ipairs(job[3]) do table.insert(flat, word) end
  end
  return flat
end
"""
"""Lua: claim up to `want` jobs from `queue_keys` (highest priority first; a queue named in the paused set is
skipped), registering each in its queue's started registry (`started_keys`) as `<id>:<execution>` scored by
`expires`, marking its hash started by `worker_name` at `stamp`, and the worker's key (if any) busy. Returns
{{slot, id, {field, value, ...}}, ...} with each job hash as it was before the claim; a popped id whose hash is
gone is dropped. `drained` (a table) collects the queue keys found empty or paused. Job keys are built inside,
so it needs a single Redis (not a cluster). `flatten` turns an execution id and such a result into one flat list,
what the scripts return (read by `decode`)."""

CLAIM = (
    CLAIM_JOBS
    + """
local worker_key = ARGV[7] == '1' and KEYS[#KEYS] or nil
local paused_key = worker_key and KEYS[#KEYS - 1] or KEYS[#KEYS]
local queue_keys, started_keys, names = {}, {}, {}
for slot = 1, (#KEYS - (worker_key and 2 or 1)) / 2 do
  queue_keys[slot], started_keys[slot], names[slot] = KEYS[2 * slot - 1], KEYS[2 * slot], ARGV[7 + slot]
end
return flatten(ARGV[3], claim_jobs(queue_keys, started_keys, names, paused_key, worker_key, tonumber(ARGV[1]),
                                   ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], {}))
"""
)
"""KEYS: (queue list, its started registry) per queue, highest priority first, then the paused set, then the
claiming worker's key if it is to be marked busy. ARGV: how many to claim, when the claims lapse (Unix time), the
execution id, the worker's name, the claim's time (RQ's format: `started_at` until the worker writes when the job
really started), RQ's job key prefix, "1" if the last key is the worker's (its `state` becomes busy when something
was claimed: what RQ's set_state writes, without a round trip of its own), then each slot's queue name. A paused
queue is skipped (see core/storage/paused.py). Returns the claimed jobs flattened (see `decode`), each with its
hash as it was before the claim (so the worker needs no second round trip to read the jobs)."""


Claimed = list[tuple[Queue, str, dict[bytes, bytes]]]
"""(queue, job id, the job hash as it was before the claim) per claimed job."""


def decode(flat: Sequence[bytes], queues: Sequence[Queue]) -> tuple[str, Claimed]:
    """Return the execution id and the claimed jobs of a script's flat answer (CLAIM_JOBS's `flatten`), whose
    slots number `queues` from 1."""
    if not flat:
        return "", []
    execution = flat[0].decode()
    claimed: Claimed = []
    at = 1
    while at < len(flat):
        slot, job_id, length = int(flat[at]), flat[at + 1].decode(), int(flat[at + 2])
        words = flat[at + 3 : at + 3 + length]
        claimed.append((queues[slot - 1], job_id, dict(zip(words[::2], words[1::2], strict=True))))
        at += 3 + length
    return execution, claimed


def mark_busy(worker: BaseWorker, claimed: Claimed) -> Claimed:
    """Set `worker` busy in memory, as RQ's set_state would, if `claimed` took something (the claim's script already
    wrote it to Redis); return `claimed`."""
    if claimed:
        worker._state = WorkerStatus.BUSY
    return claimed


def claim_member(job_id: str, execution_id: str) -> str:
    """Return a claim's member in the started registry: RQ's composite key of job and execution."""
    return f"{job_id}:{execution_id}"


class Claimer:
    """Claim up to `want` queued jobs from `queues`, highest priority first, in one Lua call."""

    def __init__(self, connection: redis.Redis, queues: Sequence[Queue], worker: BaseWorker | None = None) -> None:
        """`worker`, if given, is marked busy by each claim that takes something (in Redis and in memory)."""
        self.queues = list(queues)
        self.worker = worker
        self._keys = [key for queue in self.queues for key in (queue.key, queue.started_job_registry.key)]
        self._keys.append(PAUSED_KEY)
        if worker is not None:
            self._keys.append(worker.key)
        self._names = [queue.name for queue in self.queues]
        self._script = connection.register_script(CLAIM)

    def claim(
        self,
        want: int,
        expires: float,
        execution_id: str,
        worker_name: str,
        stamp: str,
    ) -> Claimed:
        """Claim jobs from the queues that are not paused; return (queue, job id, job hash before the claim)."""
        busy = "1" if self.worker is not None else "0"
        args: list[Any] = [want, expires, execution_id, worker_name, stamp, JOB_PREFIX, busy, *self._names]
        _, claimed = decode(self._script(keys=self._keys, args=args), self.queues)
        return claimed if self.worker is None else mark_busy(self.worker, claimed)


def perform_claimed(job: Job) -> Any:
    """Job.perform() without its PERSIST round trip: CLAIM already made the claimed job's key persistent."""
    _job_stack.push(job)  # what get_current_job() returns inside the task
    try:
        return job._execute()
    finally:
        _job_stack.pop()


def claimed_job(connection: redis.Redis, job_id: str, fields: dict[bytes, bytes], worker_name: str) -> JSONJob:
    """Return the RQ job a claim read (its hash as it was before the claim), marked started by `worker_name`.

    Its two timestamps are parsed here with datetime.fromisoformat, which reads RQ's format (utcformat) ~10x
    faster than RQ's strptime (tests/unit/test_storage.py compares the two).
    """
    fields = dict(fields)
    created, enqueued = fields.pop(b"created_at", None), fields.pop(b"enqueued_at", None)
    job = JSONJob(job_id, connection=connection)
    job.restore(fields)
    job.created_at = parse_stamp(created) if created else job.created_at
    job.enqueued_at = parse_stamp(enqueued) if enqueued else None
    job._status = JobStatus.STARTED
    job.worker_name = worker_name
    return job


def parse_stamp(stamp: bytes) -> datetime:
    """Return the UTC time of an RQ timestamp (`2026-01-02T03:04:05.678901Z`), as rq.utils.utcparse does."""
    return datetime.fromisoformat(stamp.decode()).astimezone(UTC)


def registry_score(ttl: int) -> float | str:
    """Return the score RQ's registries give an entry kept for `ttl` seconds (BaseRegistry.add: -1 is forever)."""
    if ttl < 0:
        return "+inf" if ttl == -1 else ttl
    return current_timestamp() + ttl


class Outcomes:
    """Successes waiting to be written together, as RQ's handle_job_success records them but in one MULTI/EXEC.

    Each success costs two commands: one HSET of only what changed since the
    claim (status, times, meta, and the return value in RESULT_FIELD, where
    JSONJob.latest_result finds it) and the job's EXPIRE. The whole batch then
    shares one ZADD per finished registry and one ZREM per started registry.
    RQ would also write a one-entry results stream (~0.9 KB of Redis per task)
    and rewrite every field of the hash. Other commands may be queued on
    `pipe` (they run in order, before the registries move); a kill before
    EXEC writes none of it, so the batch re-runs whole rather than half
    recorded.
    """

    def __init__(self, connection: redis.Redis) -> None:
        self.pipe: Pipeline = connection.pipeline(transaction=True)
        self.count = 0
        self._finished: dict[str, dict[str, float | str]] = {}  # finished registry key -> {job id: score}
        self._ended: dict[str, list[str]] = {}  # started registry key -> claim members

    def success(self, job: Job, return_value: Any, result_ttl: int, member: str, queue: Queue) -> None:
        """Queue `job`'s success with `return_value`, kept for `result_ttl` seconds (RQ's meaning of 0 and -1)."""
        job._status = JobStatus.FINISHED
        try:
            encoded = job.serializer.dumps(return_value)
        except Exception:  # RQ stores the same marker for a value its serializer refuses
            encoded = UNSERIALIZABLE_RETURN_VALUE_PAYLOAD.encode()
        if result_ttl == 0:
            self.pipe.delete(job.key)
        else:
            fields: dict[Any, str | bytes] = {
                "status": JobStatus.FINISHED.value,
                "started_at": utcformat(job.started_at) if job.started_at else "",
                "ended_at": utcformat(job.ended_at) if job.ended_at else "",
                "meta": job.serializer.dumps(job.meta),
                RESULT_FIELD: encoded,
            }
            self.pipe.hset(job.key, mapping=fields)
            self._finished.setdefault(finished_key(queue.name), {})[job.id] = registry_score(result_ttl)
            if result_ttl > 0:
                self.pipe.expire(job.key, result_ttl)
        self._ended.setdefault(started_key(queue.name), []).append(member)
        retention.note_finished(self.pipe, job)
        self.count += 1

    def write(self) -> None:
        """Send everything queued, and the batch's registry moves, in one round trip."""
        for key, scores in self._finished.items():
            self.pipe.zadd(key, scores)
        for key, members in self._ended.items():
            self.pipe.zrem(key, *members)
        self.pipe.execute()


def renew(pipe: Pipeline, claims: Sequence[tuple[str, str]], expires: float) -> None:
    """Queue on `pipe` a new lapse time for each (started registry key, member) claim still registered."""
    for registry_key, member in claims:
        pipe.zadd(registry_key, {member: expires}, xx=True)


def release(pipe: Pipeline, job: Job, queue: Queue, member: str) -> None:
    """Queue on `pipe` the return of an unstarted claimed job to the head of its queue, as queued."""
    pipe.zrem(queue.started_job_registry.key, member)
    pipe.hset(job.key, mapping={"status": JobStatus.QUEUED.value, WORKER_FIELD: ""})
    pipe.lpush(queue.key, job.id)
