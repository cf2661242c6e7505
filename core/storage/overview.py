"""What an operator sees of each task queue, read in two pipelined round trips without building Job objects.

Depth by state is the size of the queue's list and registries (places.py). Workers
are RQ's registrations per queue (`rq:workers:<queue>`, cleaned by RQ's maintenance).
The oldest queued task is the head of the list (RQ pushes at the tail, workers pop
at the head), aged by its `enqueued_at`. Throughput comes from the finished
registry, whose scores are expiry times (end + result TTL): every Taskrelay task
keeps its result RESULT_TTL_S, so the tasks finished in the last minute are those
scored within RESULT_TTL_S - 60 s .. RESULT_TTL_S from now. (A change of
RESULT_TTL_S skews it until the older results expire.)
"""

from __future__ import annotations

from typing import Any

import redis
from rq.utils import utcparse
from rq.worker_registration import WORKERS_BY_QUEUE_KEY

from core.storage.keys import job_key
from core.storage.paused import PAUSED_KEY
from core.storage.places import places_of
from core.storage.queues import all_queues

DEPTH_STATES = ("queued", "started", "scheduled", "deferred", "finished", "failed", "canceled")
"""The states a queue's depth is counted in (RQ's names; `started` includes a batch worker's claimed tasks)."""
THROUGHPUT_WINDOW_S = 60
"""The window `finished_last_minute` counts over, in seconds."""


def queue_overview(connection: redis.Redis, result_ttl_s: int, now: float) -> list[dict[str, Any]]:
    """Return, per task queue (highest priority first): name, paused, depth by state, workers, the oldest queued
    task's age in seconds (None when none waits) and how many tasks finished in the last minute.

    `now` is the Unix time; `result_ttl_s` is RESULT_TTL_S (see the module docstring).
    """
    queues = all_queues(connection)
    pipe = connection.pipeline(transaction=False)
    pipe.smembers(PAUSED_KEY)
    for queue in queues:
        places = places_of(queue)
        for state in DEPTH_STATES:
            places[state].size(pipe)
        pipe.lindex(queue.key, 0)
        pipe.scard(WORKERS_BY_QUEUE_KEY % queue.name)
        expires_from = now + result_ttl_s - THROUGHPUT_WINDOW_S
        pipe.zcount(places["finished"].key, expires_from, now + result_ttl_s)
    answers = pipe.execute()
    paused = {name.decode() for name in answers[0]}
    per_queue = len(DEPTH_STATES) + 3
    rows: list[dict[str, Any]] = []
    heads: dict[int, str] = {}  # row -> the id at the head of its queue
    for n, queue in enumerate(queues):
        values = answers[1 + n * per_queue : 1 + (n + 1) * per_queue]
        depth = dict(zip(DEPTH_STATES, (int(v) for v in values), strict=False))
        head, workers, finished = values[len(DEPTH_STATES) :]
        if head:
            heads[n] = head.decode()
        rows.append(
            {
                "name": queue.name,
                "paused": queue.name in paused,
                "depth": depth,
                "workers": int(workers),
                "oldest_queued_age_s": None,
                "finished_last_minute": int(finished),
            }
        )
    pipe = connection.pipeline(transaction=False)
    for job_id in heads.values():
        pipe.hget(job_key(job_id), "enqueued_at")
    for n, enqueued_at in zip(heads, pipe.execute(), strict=True):
        if enqueued_at:  # none: the job was deleted under us
            rows[n]["oldest_queued_age_s"] = round(max(0.0, now - utcparse(enqueued_at.decode()).timestamp()), 3)
    return rows
