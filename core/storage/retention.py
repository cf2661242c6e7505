"""Bounded history: keep at most so many finished and so many failed tasks per queue, oldest go first.

Like BullMQ's `removeOnComplete`/`removeOnFail` counts, on top of the age bound
(RESULT_TTL_S, FAILURE_TTL_S). Workers call `trim` from RQ's maintenance pass
(every MAINTENANCE_INTERVAL_S), never per task; between passes the history can
overshoot by what finishes in one interval. Two workers trimming at once delete
the same oldest ids, which is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from rq.queue import Queue

from core.storage.places import places_of
from core.storage.records import delete_jobs

TRIM_CHUNK = 1000
"""Ids read and deleted per round trip."""


def trim(connection: redis.Redis, queues: Sequence[Queue], keep_finished: int, keep_failed: int) -> int:
    """Delete the oldest finished and failed tasks of each queue beyond the counts; return how many went."""
    removed = 0
    for queue in queues:
        places = places_of(queue)
        for place, keep in ((places["finished"], keep_finished), (places["failed"], keep_failed)):
            excess = int(connection.zcard(place.key)) - keep
            while excess > 0:
                # Registries are scored by expiry, so with one TTL per state the lowest scores finished first.
                ids = place.read(connection, 0, min(excess, TRIM_CHUNK) - 1)
                if not ids:
                    break
                delete_jobs(connection, ids)
                connection.zrem(place.key, *ids)
                removed += len(ids)
                excess -= len(ids)
    return removed
