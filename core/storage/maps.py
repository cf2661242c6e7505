"""Map steps in RQ's storage: one task per element of a list that is known only once the step's parents finished.

A map step with task id T is three kinds of RQ job, all visible in rq-dashboard:

    T-map    the spawner: waits on the step's parents like any step (RQ's dependencies); when it runs
             (jobs.mapping.spawn) it reads the list and creates the elements in one transaction
    T-<i>    element i: an ordinary task of the step's type; with max_concurrency n, element i >= n waits
             (RQ's deferred registry) on element i - n, failure allowed: n lanes, at most n at once
    T        the collector, the step's own task: deferred until every element ended, then it runs
             (jobs.mapping.collect) and returns the elements' results in element order

and two keys: `taskrelay:map:T` (hash: `total` elements, or the spawner's `error`) and
`taskrelay:map:T:ended` (set of the indexes that ended). Recording an element's end is idempotent (a set),
and the collector is released by one Lua call that moves it from deferred to queued once, so an element that
ran twice cannot release it early or twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from rq.job import Dependency, JobStatus
from rq.utils import utcformat

from core import registry
from core.model import Retention, TaskRequest
from core.settings import Settings
from core.storage import metrics
from core.storage.enqueue import RUNNER, announce, create_job, job_hash, job_options
from core.storage.keys import DEFERRED_PREFIX, ENQUEUED_CHANNEL, QUEUES_KEY, job_key, queue_key, waiting_key
from core.storage.places import places_of
from core.storage.queues import SERIALIZER, get_queue
from core.storage.records import latest_results, read_fields, write_once
from core.workflow import StepJob

SPAWNER = "jobs.mapping.spawn"
COLLECTOR = "jobs.mapping.collect"
ENDED_STATUSES = ("finished", "failed", "canceled", "stopped")
"""RQ statuses of an element that will not run again."""


def spawner_id(task_id: str) -> str:
    """Return the id of map step `task_id`'s spawner job."""
    return f"{task_id}-map"


def element_id(task_id: str, index: int) -> str:
    """Return the id of element `index`'s job of map step `task_id`."""
    return f"{task_id}-{index}"


def map_key(task_id: str) -> str:
    """Return the hash holding a map step's element count (`total`) or its spawner's `error`."""
    return f"taskrelay:map:{task_id}"


def ended_key(task_id: str) -> str:
    """Return the set of a map step's element indexes that ended."""
    return f"taskrelay:map:{task_id}:ended"


def add_step(pipe: Pipeline, connection: redis.Redis, settings: Settings, workflow_id: str, step: StepJob) -> None:
    """Queue on `pipe` a map step's collector (deferred, released by `ended`) and its spawner (waiting on the
    step's parents)."""
    request = step.request
    spec = registry.get(request.task_type)
    queue = get_queue(connection, request.priority)
    ttl = max(settings.result_ttl_s, settings.failure_ttl_s)
    meta = {"workflow_id": workflow_id, "step_id": step.step_id, "max_retries": 0}
    collector = job_options(settings, spec, request, {**meta, "map_role": "collect"})
    collector["retry"] = None
    job = create_job(queue, request, COLLECTOR, status=JobStatus.DEFERRED, **collector)
    job.save(pipeline=pipe)
    pipe.zadd(places_of(queue)["deferred"].key, {job.id: "+inf"})
    spawner = job_options(settings, spec, request, {**meta, "map_role": "spawn", "map_of": request.task_id})
    spawner.update(job_id=spawner_id(request.task_id), retry=None)
    parents = Dependency(jobs=list(step.parent_task_ids), allow_failure=step.tolerates_failure)
    job = create_job(queue, request, SPAWNER, depends_on=parents, status=JobStatus.DEFERRED, **spawner)
    job.save(pipeline=pipe)
    job.register_dependency(pipeline=pipe)
    pipe.set(waiting_key(job.id), len(step.parent_task_ids), ex=ttl)


def spawn(
    connection: redis.Redis,
    settings: Settings,
    meta: dict[str, Any],
    entry: dict[str, Any],
    parameters: Sequence[dict[str, Any]],
) -> bool:
    """Create one element job per `parameters` for the map step whose spawner has `meta`, in one transaction;
    return False, creating nothing, when a run before this one created them. Releases the collector at once
    for an empty list.

    `entry` is the step's map entry in the workflow document (task type, priority, max_retries, retention,
    max_concurrency).
    """
    collector_id = meta["map_of"]
    key = map_key(collector_id)
    ttl = max(settings.result_ttl_s, settings.failure_ttl_s)
    spec = registry.get(entry["task_type"])
    queue = get_queue(connection, entry["priority"])
    lanes = entry.get("max_concurrency") or len(parameters)
    retention = Retention.from_dict(entry.get("retention") or {})
    now = datetime.now(UTC)

    def write(pipe: Pipeline) -> None:
        pipe.hset(key, mapping={"total": len(parameters)})
        pipe.expire(key, ttl)
        queued = []
        for index, params in enumerate(parameters):
            request = TaskRequest(
                task_id=element_id(collector_id, index),
                task_type=spec.name,
                priority=entry["priority"],
                parameters=params,
                submitted_at=now.isoformat(),
                max_retries=entry.get("max_retries"),
                retention=retention,
            )
            element = {"workflow_id": meta["workflow_id"], "step_id": meta["step_id"], "map_of": collector_id}
            element["map_index"] = index
            if index < lanes:
                mapping = job_hash(settings, spec, request, queue.name, now, element)
                pipe.hset(job_key(request.task_id), mapping=mapping)
                queued.append(request.task_id)
                continue
            options = job_options(settings, spec, request, element)
            previous = Dependency(jobs=[element_id(collector_id, index - lanes)], allow_failure=True)
            args = (spec.name, request.parameters)
            job = create_job(
                queue, request, RUNNER, args=args, depends_on=previous, status=JobStatus.DEFERRED, **options
            )
            job.save(pipeline=pipe)
            job.register_dependency(pipeline=pipe)
            pipe.set(waiting_key(job.id), 1, ex=ttl)
        counted = metrics.Tally()
        counted.submitted(spec.name, entry["priority"], len(parameters))
        counted.write(pipe)
        if queued:
            pipe.sadd(QUEUES_KEY, queue.key)
            pipe.rpush(queue.key, *queued)
            announce(pipe, [entry["priority"]])

    if not write_once(connection, key, write):
        return False  # an earlier (or concurrent) run of this spawner wrote them
    if not parameters:
        release_if_done(connection, collector_id)
    return True


def fail(connection: redis.Redis, collector_id: str, message: str, ttl_s: int) -> None:
    """The spawner failed for good (no list, or too long): record why and release the collector, which fails
    the step with that message."""
    if not connection.hexists(map_key(collector_id), "total"):  # else it failed after creating them: they run
        pipe = connection.pipeline(transaction=True)
        pipe.hsetnx(map_key(collector_id), "error", message)
        pipe.expire(map_key(collector_id), ttl_s)
        pipe.execute()
    release_if_done(connection, collector_id)


ENDED = """
if ARGV[1] ~= '' then
  redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
local total = redis.call('HGET', KEYS[2], 'total')
local failed = redis.call('HEXISTS', KEYS[2], 'error') == 1
if not failed and not total then return 0 end
if not failed and redis.call('SCARD', KEYS[1]) < tonumber(total) then return 0 end
if redis.call('HGET', KEYS[3], 'status') ~= 'deferred' then return 0 end
redis.call('HSET', KEYS[3], 'status', 'queued', 'enqueued_at', ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call('SADD', KEYS[6], KEYS[4])
redis.call('RPUSH', KEYS[4], ARGV[2])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return 1
"""
"""KEYS: ended set, map hash, collector job hash, its queue list, its deferred registry, RQ's set of queues.
ARGV: the element index that ended ('' for none), the collector id, the enqueue stamp, the set's TTL, the
queue's name, the enqueued channel.
Returns 1 when it released the collector (once: only a deferred collector moves)."""


def ended_on(pipe: Pipeline | redis.Redis, collector_id: str, queue_name: str, index: int | None, ttl_s: int) -> Any:
    """Record (on `pipe`) that element `index` of a map step on queue `queue_name` ended (succeeded, failed for
    good or was canceled), and release its collector once all did; None for `index` only checks."""
    keys = [ended_key(collector_id), map_key(collector_id), job_key(collector_id), queue_key(queue_name)]
    keys += [DEFERRED_PREFIX + queue_name, QUEUES_KEY]
    stamp = utcformat(datetime.now(UTC))
    mark = "" if index is None else str(index)
    return pipe.eval(ENDED, len(keys), *keys, mark, collector_id, stamp, ttl_s, queue_name, ENQUEUED_CHANNEL)


def ended(connection: redis.Redis, collector_id: str, indexes: Sequence[int], ttl_s: int) -> bool:
    """Record that elements `indexes` of a map step ended; release its collector once all did. Return whether
    this call released it."""
    (origin,) = read_fields(connection, [collector_id], ("origin",))[0]
    if origin is None:
        return False  # purged or expired
    pipe = connection.pipeline(transaction=False)
    marks: list[int | None] = [*indexes] or [None]
    for index in marks:
        ended_on(pipe, collector_id, origin.decode(), index, ttl_s)
    return any(pipe.execute())


def release_if_done(connection: redis.Redis, collector_id: str) -> bool:
    """Release the collector if every element ended (or the spawner failed); return whether it did."""
    return ended(connection, collector_id, [], 0)


def outcome(connection: redis.Redis, collector_id: str) -> tuple[str | None, list[tuple[str, Any]]]:
    """Return the spawner's error (None if it ran) and, per element in order, (RQ status, its result or
    its last error record)."""
    fields: Any = connection.hmget(map_key(collector_id), "total", "error")
    total, error = fields
    if error is not None:
        return error.decode(), []
    ids = [element_id(collector_id, index) for index in range(int(total or 0))]
    rows = read_fields(connection, ids, ("status", "meta"))
    results = latest_results(connection, ids)
    elements: list[tuple[str, Any]] = []
    for (status, raw_meta), result in zip(rows, results, strict=True):
        state = status.decode() if status else "missing"
        if state == "finished":
            elements.append((state, result))
        else:
            meta = SERIALIZER.loads(raw_meta) if raw_meta else {}
            errors = meta.get("errors") or [{"type": "Revoked" if state == "canceled" else "Missing", "message": state}]
            elements.append((state, {"type": errors[-1].get("type"), "message": errors[-1].get("message")}))
    return None, elements


def progress(connection: redis.Redis, collector_ids: Sequence[str]) -> list[tuple[int | None, int]]:
    """Return, per map step, (its element count, None before it spawned; how many ended), in one round trip."""
    pipe = connection.pipeline(transaction=False)
    for collector_id in collector_ids:
        pipe.hget(map_key(collector_id), "total")
        pipe.scard(ended_key(collector_id))
    raw = pipe.execute()
    return [(int(raw[n]) if raw[n] is not None else None, int(raw[n + 1])) for n in range(0, len(raw), 2)]


def unfinished_jobs(connection: redis.Redis, collector_id: str) -> list[str]:
    """Return the ids of a map step's spawner and elements that have not ended (what a cancel must stop)."""
    fields: Any = connection.hget(map_key(collector_id), "total")
    ids = [spawner_id(collector_id)] + [element_id(collector_id, i) for i in range(int(fields or 0))]
    statuses = read_fields(connection, ids, ("status",))
    return [
        job_id
        for job_id, (status,) in zip(ids, statuses, strict=True)
        if status and status.decode() not in ENDED_STATUSES
    ]


def repair(connection: redis.Redis, collector_id: str, ttl_s: int) -> bool:
    """Record the ends an element's lost worker never recorded (it was killed between writing its end and this
    bookkeeping), from the elements' own statuses; release the collector if they all ended. Maintenance runs it
    for every deferred collector."""
    fields: Any = connection.hmget(map_key(collector_id), "total", "error")
    total, error = fields
    if error is not None:
        return release_if_done(connection, collector_id)
    if total is None:
        return False
    seen: Any = connection.smembers(ended_key(collector_id))
    done = {int(i) for i in seen}
    missing = [i for i in range(int(total)) if i not in done]
    statuses = read_fields(connection, [element_id(collector_id, i) for i in missing], ("status",))
    late = [i for i, (status,) in zip(missing, statuses, strict=True) if status and status.decode() in ENDED_STATUSES]
    if not late and missing:
        return False
    return ended(connection, collector_id, late, ttl_s)
