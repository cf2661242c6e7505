"""Tasks accepted by the API but still in RabbitMQ: visible as PENDING before the bridge moves them.

The API records each task here before publishing it; the bridge forgets it in
the same MULTI that creates its RQ job. Keys (per priority queue name Q):

    taskrelay:ingress:Q          sorted set, task id -> accepted time (Unix seconds)
    taskrelay:ingress:task:<id>  hash: task_type, priority, queue, submitted_at, run_at; expires after PENDING_TTL_S
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.client import Pipeline

from jobs.queues import PRIORITIES, QUEUE_NAMES, TaskRequest

PENDING_TTL_S = 24 * 3600
"""A record the bridge never cleared (its publish failed and Redis failed too) disappears after this, in seconds."""
FIELDS = ("task_type", "priority", "queue", "submitted_at", "run_at")


def zset_key(queue_name: str) -> str:
    """Return the sorted set of accepted task ids for RQ queue `queue_name`."""
    return f"taskrelay:ingress:{queue_name}"


def task_key(task_id: str) -> str:
    """Return the hash describing accepted task `task_id`."""
    return f"taskrelay:ingress:task:{task_id}"


ALL_ZSET_KEYS = tuple(zset_key(QUEUE_NAMES[p]) for p in PRIORITIES)


# One command per accepted task: the API's hot path pays a single round trip.
REMEMBER = """
redis.call('HSET', KEYS[1], 'task_type', ARGV[1], 'priority', ARGV[2], 'queue', ARGV[3],
           'submitted_at', ARGV[4], 'run_at', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[8])
"""


def remember(connection: redis.Redis, request: TaskRequest) -> None:
    """Record `request` as accepted and on its way (one round trip)."""
    queue = QUEUE_NAMES[request.priority]
    script = _scripts.get(id(connection))
    if script is None:
        script = _scripts[id(connection)] = connection.register_script(REMEMBER)
    run_at = request.run_at.isoformat() if request.run_at else ""
    args: list[Any] = [request.task_type, request.priority, queue, request.submitted_at, run_at, PENDING_TTL_S]
    script(keys=[task_key(request.task_id), zset_key(queue)], args=[*args, time.time(), request.task_id])


_scripts: dict[int, Any] = {}


def forget(pipe: Pipeline | redis.Redis, requests: list[TaskRequest]) -> None:
    """Remove `requests` from the accepted records (add the commands to `pipe`)."""
    by_queue: dict[str, list[str]] = {}
    for request in requests:
        by_queue.setdefault(QUEUE_NAMES[request.priority], []).append(request.task_id)
    for queue, ids in by_queue.items():
        pipe.zrem(zset_key(queue), *ids)
    if requests:
        pipe.delete(*(task_key(r.task_id) for r in requests))


def get(connection: redis.Redis, task_id: str) -> dict[str, str] | None:
    """Return the accepted record of `task_id`, or None when there is none."""
    raw: Any = connection.hgetall(task_key(task_id))
    if not raw:
        return None
    return {k.decode(): v.decode() for k, v in raw.items()}


def trim(connection: redis.Redis, older_than_s: float = PENDING_TTL_S) -> int:
    """Drop sorted-set entries whose record has expired; return how many."""
    cutoff = time.time() - older_than_s
    pipe = connection.pipeline(transaction=False)
    for key in ALL_ZSET_KEYS:
        pipe.zremrangebyscore(key, 0, cutoff)
    return int(sum(pipe.execute()))
