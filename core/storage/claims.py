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
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job, JobStatus, _job_stack
from rq.results import Result

from core.storage import retention
from core.storage.keys import JOB_PREFIX, WORKER_FIELD
from core.storage.paused import PAUSED_KEY

CLAIM = """
local want = tonumber(ARGV[1])
local job_prefix = ARGV[6]
local paused_key = KEYS[#KEYS]
local claimed = {}
local function claim(slot, id)
  local job_key = job_prefix .. id
  local ttl = redis.call('TTL', job_key)  -- -2: gone (purged); >= 0: must not expire while it runs
  if ttl ~= -2 then
    if ttl >= 0 then redis.call('PERSIST', job_key) end
    redis.call('ZADD', KEYS[2 * slot], ARGV[2], id .. ':' .. ARGV[3])
    redis.call('HSET', job_key, 'status', 'started', 'worker_name', ARGV[4], 'last_heartbeat', ARGV[5])
    table.insert(claimed, slot)
    table.insert(claimed, id)
  end
end
local function paused(slot) return redis.call('SISMEMBER', paused_key, ARGV[6 + slot]) == 1 end
for slot = 1, (#KEYS - 1) / 2 do
  if #claimed >= 2 * want then break end
  if not paused(slot) then
    local ids = redis.call('LPOP', KEYS[2 * slot - 1], want - #claimed / 2)
    if ids then
      for _, id in ipairs(ids) do claim(slot, id) end
    end
  end
end
return claimed
"""
"""KEYS: (queue list, its started registry) per queue, highest priority first, then the paused set. ARGV: how
many to claim, when the claims lapse (Unix time), the execution id, the worker's name, the heartbeat stamp, RQ's
job key prefix, then each slot's queue name. A paused queue is skipped (see core/storage/paused.py). Returns
[slot, id, ...]. Job keys are built inside the script, so it needs a single Redis (not a cluster)."""


def claim_member(job_id: str, execution_id: str) -> str:
    """Return a claim's member in the started registry: RQ's composite key of job and execution."""
    return f"{job_id}:{execution_id}"


class Claimer:
    """Claim up to `want` queued jobs from `queues`, highest priority first, in one Lua call."""

    def __init__(self, connection: redis.Redis, queues: Sequence[Queue]) -> None:
        self.queues = list(queues)
        self._keys = [key for queue in self.queues for key in (queue.key, queue.started_job_registry.key)]
        self._keys.append(PAUSED_KEY)
        self._names = [queue.name for queue in self.queues]
        self._script = connection.register_script(CLAIM)

    def claim(
        self,
        want: int,
        expires: float,
        execution_id: str,
        worker_name: str,
        stamp: str,
    ) -> list[tuple[Queue, str]]:
        """Claim jobs from the queues that are not paused; return (queue, job id) pairs."""
        args: list[Any] = [want, expires, execution_id, worker_name, stamp, JOB_PREFIX, *self._names]
        flat = self._script(keys=self._keys, args=args)
        return [(self.queues[int(flat[i]) - 1], flat[i + 1].decode()) for i in range(0, len(flat), 2)]


def perform_claimed(job: Job) -> Any:
    """Job.perform() without its PERSIST round trip: CLAIM already made the claimed job's key persistent."""
    _job_stack.push(job)  # what get_current_job() returns inside the task
    try:
        return job._execute()
    finally:
        _job_stack.pop()


def record_success(
    pipe: Pipeline, job: Job, return_value: Any, worker_name: str, result_ttl: int, member: str, queue: Queue
) -> None:
    """Queue on `pipe` what RQ's handle_job_success writes, in fewer commands: one HSET, no dependents' keys.

    Same data as RQ (status, timestamps, result stream, finished registry,
    expiry); what it skips is RQ's separate status HSET and the EXPIREs of
    dependents/dependencies keys, which Taskrelay jobs never have.
    """
    job._status = JobStatus.FINISHED
    job.save(pipeline=pipe, include_meta=False, include_result=False)
    Result.create(
        job, Result.Type.SUCCESSFUL, ttl=result_ttl, return_value=return_value, worker_name=worker_name, pipeline=pipe
    )
    if result_ttl != 0:
        job.finished_job_registry.add(job, result_ttl, pipe)
    if result_ttl > 0:
        pipe.expire(job.key, result_ttl)
    elif result_ttl == 0:
        pipe.delete(job.key)
    pipe.zrem(queue.started_job_registry.key, member)
    retention.note_finished(pipe, job)


def renew(pipe: Pipeline, claims: Sequence[tuple[str, str]], expires: float) -> None:
    """Queue on `pipe` a new lapse time for each (started registry key, member) claim still registered."""
    for registry_key, member in claims:
        pipe.zadd(registry_key, {member: expires}, xx=True)


def release(pipe: Pipeline, job: Job, queue: Queue, member: str) -> None:
    """Queue on `pipe` the return of an unstarted claimed job to the head of its queue, as queued."""
    pipe.zrem(queue.started_job_registry.key, member)
    pipe.hset(job.key, mapping={"status": JobStatus.QUEUED.value, WORKER_FIELD: ""})
    pipe.lpush(queue.key, job.id)
