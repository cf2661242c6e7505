"""Paused queues: a Redis set of queue names that no worker takes from, and the worker side that honours it.

RQ's `rq suspend` stops every worker on every queue; a pause here is per queue.
Workers finish what they run (a batch worker also the few claimed tasks in its
hand, about 50 ms of work) and take nothing more from a paused queue:

- RQ's blocking dequeue (every worker class when idle) blocks only on the
  unpaused queues, at most PAUSE_CHECK_S at a time, so an idle worker sees a
  pause within that; a job popped in the instant a pause lands is pushed back
  to the head of its queue, untouched;
- the batch worker's claim script skips paused queues inside Redis
  (core/storage/claims.py), so no claim races a pause.

`PausableQueues` overrides RQ's private `_ordered_queues` (the list RQ's dequeue
blocks on); tests/unit/test_storage.py pins that RQ reads it for every dequeue.
A worker needs one queue that is never paused to block on: Taskrelay's workers
always listen on taskrelay_schedules, which the API does not pause (with none
left, RQ's BLPOP would get no key and the worker would stop).
"""

from __future__ import annotations

from typing import Any

import redis
from rq import Queue

PAUSED_KEY = "taskrelay:paused"
"""Set of the names of paused queues."""
PAUSE_CHECK_S = 1
"""Longest an idle worker blocks on its queues before it looks at the paused set again, in seconds."""


def pause(connection: redis.Redis, queue_name: str) -> None:
    """Stop workers taking from `queue_name` (idempotent)."""
    connection.sadd(PAUSED_KEY, queue_name)


def resume(connection: redis.Redis, queue_name: str) -> None:
    """Let workers take from `queue_name` again (idempotent)."""
    connection.srem(PAUSED_KEY, queue_name)


def paused_names(connection: redis.Redis) -> set[str]:
    """Return the names of the paused queues."""
    return {name.decode() if isinstance(name, bytes) else name for name in connection.smembers(PAUSED_KEY)}


class PausableQueues:
    """An RQ worker mixin: dequeue only from queues that are not paused (see the module docstring)."""

    connection: Any
    _listening: list[Queue]

    @property
    def _ordered_queues(self) -> list[Queue]:
        paused = paused_names(self.connection)
        live = [queue for queue in self._listening if queue.name not in paused]
        # RQ's dequeue switches to BLMOVE through its intermediate queue for a single key, which a worker of
        # several queues never cleans up: a repeated key keeps it on BLPOP (Redis accepts duplicate keys).
        return live * 2 if len(live) == 1 else live

    @_ordered_queues.setter
    def _ordered_queues(self, queues: list[Queue]) -> None:
        self._listening = list(queues)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if timeout is not None:
            timeout = min(timeout, PAUSE_CHECK_S)
        while True:
            result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[misc]
            if result is None:
                return None
            job, queue = result
            if queue.name not in paused_names(self.connection):
                return result
            self.connection.lpush(queue.key, job.id)  # paused while we blocked: give it back, untouched
