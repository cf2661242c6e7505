"""Bounded history: by age (each job's TTL) and by count, per queue and per task type; oldest go first.

Like BullMQ's `removeOnComplete`/`removeOnFail` `{age, count}`. Age is RQ's own
per-job result_ttl/failure_ttl, picked by core.storage.enqueue.job_options (the
submit's, else the task type's, else RESULT_TTL_S/FAILURE_TTL_S). Counts:

- KEEP_FINISHED and KEEP_FAILED cap each queue's history, whatever a task asks:
  that ceiling is what keeps Redis memory bounded.
- A count given by a submit or a task type rides in the job's meta
  (COUNT_META), and limits that task type's history across queues. The worker
  that writes the job's end adds one ZADD to the pipeline it already sends
  (`note_finished`, `note_ended`): member `<count>:<job id>` in the type's index
  (core.storage.keys.kept_key), scored by expiry like RQ's registries. The
  count of the latest-expiring member is the type's count: the latest setting
  seen wins. A task without a count adds nothing.

Workers call `trim` from RQ's maintenance pass (every MAINTENANCE_INTERVAL_S),
never per task; between passes the history can overshoot by what finishes in
one interval. Two workers trimming at once delete the same oldest ids, which is
harmless.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import redis
from redis.client import Pipeline
from rq.defaults import DEFAULT_FAILURE_TTL, DEFAULT_RESULT_TTL
from rq.job import Job, JobStatus
from rq.queue import Queue

from core import registry
from core.model import FINAL_STATES, Retention
from core.storage.keys import kept_key
from core.storage.places import places_of
from core.storage.records import delete_jobs

TRIM_CHUNK = 1000
"""Ids read and deleted per round trip."""
COUNT_META = "keep_count"
"""The job meta entry `{"success": n, "failure": m}`: the counts its submit or task type gave (absent if none)."""
PLACE_OF_STATE = {"success": "finished", "failure": "failed"}
"""Which of RQ's registries (core.storage.places kinds) holds the tasks ended in each final state."""


def count_meta(retention: Retention) -> dict[str, Any]:
    """Return the job meta carrying `retention`'s counts, or nothing when it sets none (the usual case)."""
    counts = {state: keep.count for state, keep in retention.keeps().items() if keep.count}
    return {COUNT_META: counts} if counts else {}


def note_finished(pipe: Pipeline, job: Job) -> None:
    """Queue on `pipe` one ZADD indexing finished `job` under its task type, if it carries a success count."""
    _note(pipe, job, "success", job.get_result_ttl(DEFAULT_RESULT_TTL))


def note_ended(pipe: Pipeline, job: Job) -> None:
    """Queue on `pipe` the index entry of a job RQ is ending: finished, or failed or stopped for good (a job
    that will be retried ends nothing)."""
    status = job.get_status(refresh=False)
    if status == JobStatus.FINISHED:
        note_finished(pipe, job)
    elif status in (JobStatus.FAILED, JobStatus.STOPPED):
        _note(pipe, job, "failure", job.failure_ttl or DEFAULT_FAILURE_TTL)


def _note(pipe: Pipeline, job: Job, state: str, ttl: int) -> None:
    meta = job.meta or {}
    count = (meta.get(COUNT_META) or {}).get(state)
    if not count or ttl == 0:  # no count asked, or nothing kept at all
        return
    expires = time.time() + ttl if ttl > 0 else float("inf")
    pipe.zadd(kept_key(state, meta.get("task_type") or job.description or ""), {f"{count}:{job.id}": expires})


def index_keys() -> list[tuple[str, str]]:
    """Return (final state, index key) for every registered task type and final state."""
    return [(state, kept_key(state, name)) for name in registry.names() for state in FINAL_STATES]


def trim(connection: redis.Redis, queues: Sequence[Queue], keep_finished: int, keep_failed: int) -> int:
    """Delete the oldest finished and failed tasks beyond their task type's count, then beyond each queue's
    counts; return how many went."""
    return trim_types(connection, queues) + trim_queues(connection, queues, keep_finished, keep_failed)


def trim_queues(connection: redis.Redis, queues: Sequence[Queue], keep_finished: int, keep_failed: int) -> int:
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


def trim_types(connection: redis.Redis, queues: Sequence[Queue]) -> int:
    """Delete the oldest tasks of each task type's index beyond the count its latest member carries; return how
    many went. One round trip reads every index; only an index over its count costs more."""
    indexes = index_keys()
    pipe = connection.pipeline(transaction=False)
    for _, key in indexes:
        pipe.zremrangebyscore(key, "-inf", time.time())  # expired: RQ deleted those jobs already
        pipe.zcard(key)
        pipe.zrange(key, -1, -1)
    answers = pipe.execute()
    removed = 0
    for n, (state, key) in enumerate(indexes):
        size, newest = int(answers[3 * n + 1]), answers[3 * n + 2]
        excess = size - _count_of(newest[0]) if newest else 0
        while excess > 0:
            members: Any = connection.zrange(key, 0, min(excess, TRIM_CHUNK) - 1)
            if not members:
                break
            removed += _drop(connection, queues, PLACE_OF_STATE[state], key, members)
            excess -= len(members)
    return removed


def _count_of(member: bytes) -> int:
    return int(member.partition(b":")[0])


def _drop(connection: redis.Redis, queues: Sequence[Queue], kind: str, key: str, members: list[bytes]) -> int:
    """Delete the jobs of `members` still in one of `queues`' `kind` registries, unregister them there and drop
    every member from the index; return how many jobs went.

    A job no longer registered there expired, was purged, or was retried (and runs again): it is left alone.
    """
    job_ids = [member.partition(b":")[2].decode() for member in members]
    registries = [places_of(queue)[kind].key for queue in queues]
    pipe = connection.pipeline(transaction=False)
    for job_id in job_ids:
        for registry_key in registries:
            pipe.zscore(registry_key, job_id)
    scores = pipe.execute()
    width = len(registries)
    ended = [
        job_id for n, job_id in enumerate(job_ids) if any(s is not None for s in scores[n * width : (n + 1) * width])
    ]

    def unregister(pipe: Pipeline, chunk: list[str]) -> None:
        for registry_key in registries:
            pipe.zrem(registry_key, *chunk)

    if ended:
        delete_jobs(connection, ended, also=unregister)
    connection.zrem(key, *members)
    return len(ended)
