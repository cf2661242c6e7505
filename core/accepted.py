"""Tasks accepted by the API but still in RabbitMQ: visible as PENDING before the bridge moves them.

The API records each task here before publishing it; the bridge forgets it in
the same MULTI that creates its RQ job (so this lives in core/, which both
import). Keys (per priority queue name Q):

    taskrelay:ingress:Q        sorted set, task id -> accepted time (Unix seconds)
    taskrelay:ingress:records  hash, task id -> JSON {task_type, priority, queue, submitted_at, run_at}

One hash for all records (rather than a key per task) lets a batch of accepted
tasks be written with one HSET and one ZADD per queue, whatever its size.
Records the bridge never cleared (the publish failed and so did Redis) are
dropped by `trim`, which the bridge runs every bridge.service.TRIM_EVERY_S.

With INGRESS_MODE=dual the API enqueues the task into RQ itself and publishes
it too; its enqueue also marks the task here, and the bridge, finding the mark,
removes it and creates nothing:

    taskrelay:ingress:in-redis  sorted set, task id -> when the API enqueued it (Unix seconds)

A message whose mark is gone (Redis lost the enqueue, or never took it) is
enqueued by the bridge as usual, idempotent by task id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.client import Pipeline

from core.model import PRIORITIES, QUEUE_NAMES, TaskRequest

PENDING_TTL_S = 24 * 3600
"""`trim` drops records older than this, in seconds: by then their publish has certainly failed."""
RECORDS_KEY = "taskrelay:ingress:records"


def zset_key(queue_name: str) -> str:
    """Return the sorted set of accepted task ids for RQ queue `queue_name`."""
    return f"taskrelay:ingress:{queue_name}"


ALL_ZSET_KEYS = tuple(zset_key(QUEUE_NAMES[p]) for p in PRIORITIES)


def remember(
    connection: redis.Redis, requests: list[TaskRequest], also: Callable[[Pipeline], object] | None = None
) -> None:
    """Record `requests` as accepted and on their way: one round trip, one HSET and a ZADD per queue.

    `also` may add commands to the same round trip (the API counts the tasks submitted there).

    The caller publishes only after this returned, so the record is in Redis
    before the bridge can see the message (and forget the record), however
    far the API is from Redis.
    """
    now = time.time()
    records: dict[Any, Any] = {}
    by_queue: dict[str, dict[Any, float]] = {}
    for request in requests:
        records[request.task_id] = _record(request)
        by_queue.setdefault(QUEUE_NAMES[request.priority], {})[request.task_id] = now
    pipe = connection.pipeline(transaction=False)
    pipe.hset(RECORDS_KEY, mapping=records)
    for queue, members in by_queue.items():
        pipe.zadd(zset_key(queue), members)
    if also is not None:
        also(pipe)
    pipe.execute()


def _record(request: TaskRequest) -> str:
    """Return the accepted record of `request`, as stored (its submitted_at tells two attempts at one id apart)."""
    return json.dumps(
        {
            "task_type": request.task_type,
            "priority": request.priority,
            "queue": QUEUE_NAMES[request.priority],
            "submitted_at": request.submitted_at,
            "run_at": request.run_at.isoformat() if request.run_at else "",
        }
    )


FORGET_OWN = """
for i = 1, #ARGV, 3 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[tonumber(ARGV[i + 2])], ARGV[i])
  end
end
"""
"""KEYS: the records hash, then ALL_ZSET_KEYS. ARGV: (task id, its record, index of its queue's sorted set in
KEYS) per task. Drops a record only if it is still the one given."""


def forget_own(pipe: Pipeline | redis.Redis, requests: list[TaskRequest]) -> None:
    """Remove the records of `requests` that are still theirs (add one command to `pipe`).

    For a publish that failed: another attempt at the same id (an Idempotency-Key retry that took the key
    over) may have recorded and published it meanwhile, and its record must stay.
    """
    index = {key: n for n, key in enumerate(ALL_ZSET_KEYS, start=2)}
    args = [
        part
        for request in requests
        for part in (request.task_id, _record(request), index[zset_key(QUEUE_NAMES[request.priority])])
    ]
    if args:
        pipe.eval(FORGET_OWN, 1 + len(ALL_ZSET_KEYS), RECORDS_KEY, *ALL_ZSET_KEYS, *args)


def forget(pipe: Pipeline | redis.Redis, requests: list[TaskRequest]) -> None:
    """Remove `requests` from the accepted records (add the commands to `pipe`)."""
    by_queue: dict[str, list[str]] = {}
    for request in requests:
        by_queue.setdefault(QUEUE_NAMES[request.priority], []).append(request.task_id)
    for queue, ids in by_queue.items():
        pipe.zrem(zset_key(queue), *ids)
    if requests:
        pipe.hdel(RECORDS_KEY, *(r.task_id for r in requests))


def forget_ids(pipe: Pipeline, task_ids: list[str]) -> None:
    """Drop the records of `task_ids` only (add the command to `pipe`); a purge deletes the sorted sets whole."""
    if task_ids:
        pipe.hdel(RECORDS_KEY, *task_ids)


def _decode(raw: bytes | str | None) -> dict[str, str] | None:
    """Return a record as stored in RECORDS_KEY, decoded; None for a missing one."""
    return json.loads(raw) if raw else None


def get(connection: redis.Redis, task_id: str) -> dict[str, str] | None:
    """Return the accepted record of `task_id`, or None when there is none."""
    raw: Any = connection.hget(RECORDS_KEY, task_id)
    return _decode(raw)


def get_many(connection: redis.Redis, task_ids: list[str]) -> list[dict[str, str] | None]:
    """Return the accepted records of `task_ids` in order (None where there is none), in one HMGET."""
    if not task_ids:
        return []
    raw: Any = connection.hmget(RECORDS_KEY, task_ids)
    return [_decode(value) for value in raw]


IN_REDIS_KEY = "taskrelay:ingress:in-redis"


def mark_in_redis(pipe: Pipeline, task_ids: list[str]) -> None:
    """Mark `task_ids` as enqueued by the API (add the command to `pipe`, the enqueue's own transaction)."""
    if task_ids:
        now = time.time()
        pipe.zadd(IN_REDIS_KEY, dict.fromkeys(task_ids, now))


TAKE_MARKS = """
local left = {}
for i, id in ipairs(ARGV) do
  if redis.call('ZREM', KEYS[1], id) == 0 then left[#left + 1] = id end
end
return left
"""
"""KEYS: IN_REDIS_KEY. ARGV: task ids. Removes their marks; returns the ids that had none."""


def take_marks(connection: redis.Redis, task_ids: list[str]) -> set[str]:
    """Remove the marks of `task_ids` in one round trip; return the ids that had none (the bridge enqueues those)."""
    if not task_ids:
        return set()
    left: Any = connection.eval(TAKE_MARKS, 1, IN_REDIS_KEY, *task_ids)
    return {raw.decode() if isinstance(raw, bytes) else raw for raw in left}


def unmark(connection: redis.Redis, task_ids: list[str]) -> None:
    """Drop the marks of `task_ids`, whose publish failed (no message will come to remove them)."""
    if task_ids:
        connection.zrem(IN_REDIS_KEY, *task_ids)


def drop_marks(connection: redis.Redis) -> int:
    """Drop every mark (the ingress queue was purged: no message will come for them); return how many."""
    pipe = connection.pipeline(transaction=True)
    pipe.zcard(IN_REDIS_KEY)
    pipe.delete(IN_REDIS_KEY)
    return int(pipe.execute()[0])


def trim(connection: redis.Redis, older_than_s: float = PENDING_TTL_S) -> int:
    """Drop the records accepted, and the marks made, more than `older_than_s` ago; return how many."""
    cutoff = time.time() - older_than_s
    dropped = int(connection.zremrangebyscore(IN_REDIS_KEY, 0, cutoff))
    for key in ALL_ZSET_KEYS:
        stale: Any = connection.zrangebyscore(key, 0, cutoff)
        if stale:
            pipe = connection.pipeline(transaction=True)
            pipe.hdel(RECORDS_KEY, *stale)
            pipe.zrem(key, *stale)
            dropped += int(pipe.execute()[1])
    return dropped
