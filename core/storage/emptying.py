"""Take every queued job off a queue at once: what emptying a queue starts with.

LRANGE and DEL run in one MULTI, so a worker cannot claim a job half-way, and a
task enqueued just after lands in a fresh list and survives. The caller decides
what becomes of the ids (delete or cancel).
"""

from __future__ import annotations

import redis
from rq import Queue


def take_queued(connection: redis.Redis, queue: Queue) -> list[str]:
    """Remove every id from `queue`'s list atomically; return them, head first."""
    with connection.pipeline(transaction=True) as pipe:
        pipe.lrange(queue.key, 0, -1)
        pipe.delete(queue.key)
        ids, _ = pipe.execute()
    return [job_id.decode() if isinstance(job_id, bytes) else job_id for job_id in ids]
