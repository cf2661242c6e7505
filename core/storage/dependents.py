"""Release the steps waiting on a finished parent in one Lua call, which the batch worker adds to the pipeline
that writes the parent's success: no round trip of its own.

It does what RQ's `Queue.enqueue_dependents` does for a finished parent, on RQ's own keys (the parent's
dependents set, each dependent's dependencies set, status, `allow_dependency_failures` and origin, the
deferred registry, the queue list and RQ's set of queues), atomically rather than with WATCH/MULTI and a
fetch of every dependent. A dependent is enqueued when it is still deferred and each of its parents is
finished (or failed, when it allows failures; a parent whose job is gone counts as met, as in RQ). A counter
per waiting step (`taskrelay:waiting:<id>`, set at submit to its number of parents) skips the parents' check
until the last parent reported, so a fan-in of n parents costs O(n), not O(n²); the check still decides, so a
parent that ran twice cannot release a step early. tests/unit/test_storage.py compares the outcome with
RQ's enqueue_dependents on the same jobs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from rq.utils import utcformat

from core.storage.keys import (
    DEFERRED_PREFIX,
    ENQUEUED_CHANNEL,
    JOB_PREFIX,
    QUEUE_PREFIX,
    QUEUES_KEY,
    WAITING_PREFIX,
    dependents_key,
)

RELEASE = """
local dependents = redis.call('SMEMBERS', KEYS[1])
local released = 0
local remaining = #dependents
for _, id in ipairs(dependents) do
  local left = redis.call('DECR', ARGV[1] .. id)
  if left <= 0 then
    local key = ARGV[2] .. id
    local fields = redis.call('HMGET', key, 'status', 'allow_dependency_failures', 'origin')
    if fields[1] == 'deferred' and fields[3] then
      local ready = true
      for _, parent in ipairs(redis.call('SMEMBERS', ARGV[2] .. ':' .. id .. ':dependencies')) do
        local status = redis.call('HGET', ARGV[2] .. parent, 'status')
        if status and status ~= 'finished' and not (status == 'failed' and fields[2] == '1') then
          ready = false
          break
        end
      end
      if ready then
        local queue = ARGV[3] .. fields[3]
        redis.call('HSET', key, 'status', 'queued', 'enqueued_at', ARGV[6])
        redis.call('ZREM', ARGV[4] .. fields[3], id)
        redis.call('SADD', ARGV[5], queue)
        redis.call('RPUSH', queue, id)
        redis.call('SREM', KEYS[1], id)
        remaining = remaining - 1
        released = released + 1
        redis.call('PUBLISH', ARGV[7], fields[3])
      end
    elseif fields[1] ~= 'deferred' then
      redis.call('SREM', KEYS[1], id)
      remaining = remaining - 1
    end
  end
end
if #dependents > 0 and remaining == 0 then redis.call('DEL', KEYS[1]) end
return released
"""
"""KEYS: the parent's dependents set. ARGV: the waiting-counter prefix, RQ's job key prefix, its queue key
prefix, the deferred registry prefix, RQ's set of queues, the enqueue stamp, the enqueued channel. Returns how
many dependents it enqueued."""


def _argv() -> list[Any]:
    stamp = utcformat(datetime.now(UTC))
    return [WAITING_PREFIX, JOB_PREFIX, QUEUE_PREFIX, DEFERRED_PREFIX, QUEUES_KEY, stamp, ENQUEUED_CHANNEL]


def release(pipe: Pipeline | redis.Redis, parent_id: str) -> Any:
    """Enqueue (on `pipe`: in its round trip) the dependents of finished job `parent_id` that are now ready."""
    return pipe.eval(RELEASE, 1, dependents_key(parent_id), *_argv())
