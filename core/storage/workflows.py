"""Workflows in RQ's storage: each step is an ordinary RQ job; a step with parents waits in RQ's deferred
registry with RQ's own dependency sets (`rq:job:<parent>:dependents`), so rq-dashboard shows it waiting and
RQ's `enqueue_dependents` releases it once every parent finished.

The workflow itself is one JSON document (`taskrelay:workflow:<id>`: name,
steps with their task ids and parents), indexed by creation time in
`taskrelay:workflows`. A workflow is written in one MULTI/EXEC: all of it or
none, and only once (a redelivered ingress message creates nothing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from rq.job import Dependency, Job, JobStatus
from rq.queue import Queue

from core import registry
from core.accepted import PENDING_TTL_S
from core.model import TaskRequest
from core.settings import Settings
from core.storage import maps, metrics
from core.storage.cancel import cancel_waiting_many
from core.storage.dependents import release
from core.storage.enqueue import RUNNER, announce, create_job, enqueue_batch, job_options
from core.storage.keys import ORIGIN_FIELD, QUEUES_KEY, dependencies_key, waiting_key
from core.storage.places import places_of
from core.storage.queues import SERIALIZER, get_queue, queue_named
from core.storage.records import fetch_job, latest_results, read_fields
from core.workflow import Failed, Plan, descendants_of

WORKFLOW_PREFIX = "taskrelay:workflow:"
ACCEPTED_PREFIX = "taskrelay:workflow-accepted:"
WORKFLOWS_KEY = "taskrelay:workflows"
"""Sorted set: workflow id -> creation time (Unix seconds)."""


def workflow_key(workflow_id: str) -> str:
    """Return the key of a workflow's JSON document."""
    return WORKFLOW_PREFIX + workflow_id


def accepted_key(workflow_id: str) -> str:
    """Return the key of a workflow accepted by the API but still in the RabbitMQ ingress (its document)."""
    return ACCEPTED_PREFIX + workflow_id


def remember(connection: redis.Redis, plan: Plan) -> None:
    """Record a workflow as accepted and on its way through RabbitMQ, so it reads PENDING (and can be canceled)
    before the bridge creates it; the bridge deletes the record in the transaction that creates it."""
    pipe = connection.pipeline(transaction=True)
    pipe.set(accepted_key(plan.workflow_id), json.dumps(plan.document), ex=PENDING_TTL_S)
    pipe.zadd(WORKFLOWS_KEY, {plan.workflow_id: time.time()})
    pipe.execute()


def forget(connection: redis.Redis, workflow_id: str) -> None:
    """Drop the accepted record of a workflow whose publish failed (the API answered 503)."""
    pipe = connection.pipeline(transaction=True)
    pipe.delete(accepted_key(workflow_id))
    pipe.zrem(WORKFLOWS_KEY, workflow_id)
    pipe.execute()


def create(connection: redis.Redis, settings: Settings, plan: Plan) -> bool:
    """Write the workflow document and every step's job (parents first), in one transaction; return False, creating
    nothing, when the workflow exists already (a redelivered ingress message).

    The document's key is WATCHed, so two callers racing on one workflow cannot both create it. A workflow
    canceled while it was still in the ingress is written with its document only: no step runs.
    """
    key = workflow_key(plan.workflow_id)
    while True:
        with connection.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key, accepted_key(plan.workflow_id))
                if pipe.exists(key):
                    return False
                raw: Any = pipe.get(accepted_key(plan.workflow_id))
                revoked = bool(raw and json.loads(raw).get("revoked"))
                pipe.multi()
                _write(pipe, connection, settings, plan, revoked)
                pipe.execute()
                return True
            except redis.WatchError:
                continue


def _write(pipe: Pipeline, connection: redis.Redis, settings: Settings, plan: Plan, revoked: bool) -> None:
    ttl = max(settings.result_ttl_s, settings.failure_ttl_s)
    document = {**plan.document, "revoked": True} if revoked else plan.document
    pipe.set(workflow_key(plan.workflow_id), json.dumps(document), ex=ttl)
    pipe.delete(accepted_key(plan.workflow_id))
    pipe.zadd(WORKFLOWS_KEY, {plan.workflow_id: time.time()}, nx=True)
    if revoked:
        return
    metrics.Tally.of_submitted([step.request for step in plan.steps]).write(pipe)  # each step once, whatever path
    pushed: set[str] = set()
    for step in plan.steps:
        if step.is_map:
            maps.add_step(pipe, connection, settings, plan.workflow_id, step)
            continue
        request = step.request
        spec = registry.get(request.task_type)
        options = job_options(settings, spec, request)
        options["meta"].update(workflow_id=plan.workflow_id, step_id=step.step_id)
        queue = get_queue(connection, request.priority)
        args = (spec.name, request.parameters)
        if step.parent_task_ids:
            parents = Dependency(jobs=list(step.parent_task_ids), allow_failure=step.tolerates_failure)
            job = create_job(
                queue, request, RUNNER, args=args, depends_on=parents, status=JobStatus.DEFERRED, **options
            )
            job.save(pipeline=pipe)
            job.register_dependency(pipeline=pipe)
            pipe.set(waiting_key(request.task_id), len(step.parent_task_ids), ex=ttl)
        else:
            job = create_job(queue, request, RUNNER, args=args, status=JobStatus.QUEUED, **options)
            job.enqueued_at = datetime.now(UTC)
            job.save(pipeline=pipe)  # Queue.enqueue_job would WATCH inside this transaction
            pipe.sadd(QUEUES_KEY, queue.key)
            pipe.rpush(queue.key, job.id)
            pushed.add(request.priority)
    announce(pipe, sorted(pushed))


def load(connection: redis.Redis, workflow_id: str, accepted: bool = False) -> dict[str, Any] | None:
    """Return a workflow's document, or None when there is none (never created, expired or purged).

    With `accepted`, a workflow still in the RabbitMQ ingress is returned too, marked `"accepted": True`.
    """
    raw: Any = connection.get(workflow_key(workflow_id))
    if raw:
        return json.loads(raw)
    if accepted and (raw := connection.get(accepted_key(workflow_id))):
        return _accepted(raw)
    return None


def _accepted(raw: bytes | str) -> dict[str, Any]:
    """Return the document of a workflow's accepted record (still in the RabbitMQ ingress), marked as such."""
    return {**json.loads(raw), "accepted": True}


def load_many(connection: redis.Redis, workflow_ids: list[str], accepted: bool = False) -> list[dict[str, Any] | None]:
    """Return `load` of each of `workflow_ids`, in order, in one round trip (two if some are only accepted).

    `load` stays a plain GET: it runs before every workflow step a worker starts, where a pipeline costs more."""
    pipe = connection.pipeline(transaction=False)
    for workflow_id in workflow_ids:
        pipe.get(workflow_key(workflow_id))
    documents: list[dict[str, Any] | None] = [json.loads(raw) if raw else None for raw in pipe.execute()]
    missing = [i for i, document in enumerate(documents) if document is None]
    if accepted and missing:
        for workflow_id in (workflow_ids[i] for i in missing):
            pipe.get(accepted_key(workflow_id))
        for i, raw in zip(missing, pipe.execute(), strict=True):
            documents[i] = _accepted(raw) if raw else None
    return documents


def mark_revoked(connection: redis.Redis, workflow_id: str) -> None:
    """Record in the document that the whole workflow was canceled (in its accepted record while it is still in
    the ingress: the bridge then creates no step)."""
    for key in (workflow_key(workflow_id), accepted_key(workflow_id)):
        raw: Any = connection.get(key)
        if raw:
            connection.set(key, json.dumps({**json.loads(raw), "revoked": True}), keepttl=True)


def results_of(connection: redis.Redis, task_ids: dict[str, str], failures: bool = False) -> dict[str, Any]:
    """Return {step id: the return value of its task} for finished steps (RQ's results stream); with
    `failures`, failed steps too, as core.workflow.Failed holding their last error. Two round trips in all."""
    steps, ids = list(task_ids), list(task_ids.values())
    rows = read_fields(connection, ids, ("status", "meta"))
    finished = [n for n, (status, _) in enumerate(rows) if status == b"finished"]
    values = latest_results(connection, [ids[n] for n in finished])
    found: dict[str, Any] = {steps[n]: value for n, value in zip(finished, values, strict=True)}
    if failures:
        for n, (status, meta) in enumerate(rows):
            if status == b"failed":
                errors = (SERIALIZER.loads(meta) if meta else {}).get("errors") or [{}]
                found[steps[n]] = Failed({"type": errors[-1].get("type"), "message": errors[-1].get("message")})
    return found


def release_on(pipe: Pipeline, job: Job) -> None:
    """Add to `pipe`, after `job`'s success, the release of the steps waiting on it (core.storage.dependents)
    and, for a map element, the record of its end: the batch worker's flush writes all of it in one round trip."""
    release(pipe, job.id)
    index = (job.meta or {}).get("map_index")
    if index is not None:
        ttl = max(job.result_ttl or 0, job.failure_ttl or 0, 3600)
        maps.ended_on(pipe, job.meta["map_of"], job.origin, int(index), ttl)


def element_ended(connection: redis.Redis, job: Job) -> None:
    """If `job` is an element of a map step, record that it ended (its success or final failure is written)."""
    index = (job.meta or {}).get("map_index")
    if index is not None:
        ttl = max(job.result_ttl or 0, job.failure_ttl or 0, 3600)
        maps.ended(connection, job.meta["map_of"], [int(index)], ttl)


def release_stuck(connection: redis.Redis, queues: Sequence[Queue]) -> int:
    """Enqueue waiting steps whose parents all finished but were never released; return how many parents released.

    A batch worker writes a parent's success and then releases its dependents;
    one killed between the two leaves them waiting. Every maintenance pass runs
    this (RQ's enqueue_dependents decides, as always).
    """
    released = 0
    for queue in queues:
        for job_id in places_of(queue)["deferred"].read(connection, 0, -1):
            raw: Any = connection.smembers(dependencies_key(job_id))
            parents = sorted(p.decode() for p in raw)
            if not parents:  # a map step's collector: released once every element ended
                released += maps.repair(connection, job_id, 3600)
                continue
            if all(status == b"finished" for (status,) in read_fields(connection, parents, ("status",))):
                parent = fetch_job(connection, parents[0])
                if parent is not None:
                    queue.enqueue_dependents(parent)
                    released += 1
    return released


def settle_failed(
    connection: redis.Redis, settings: Settings, workflow_id: str, step_id: str, error: dict[str, Any]
) -> list[str]:
    """A step failed for good with `error`: run the workflow's on_failure task (once), cancel the steps that
    cannot run without it, and count it as ended for those that tolerate its failure (their parents'
    countdown). Return the canceled step ids."""
    document = load(connection, workflow_id)
    if document is None:
        return []
    steps = document["steps"]
    tolerating = [step["task_id"] for step in steps.values() if step_id in step.get("allow_failure", ())]
    if tolerating:
        pipe = connection.pipeline(transaction=False)
        for task_id in tolerating:
            pipe.decr(waiting_key(task_id))
        pipe.execute()
    _run_on_failure(connection, settings, document, step_id, error)
    ttl = settings.failure_ttl_s
    return cancel_descendants(connection, workflow_id, step_id, ttl, document=document, failed=True)


def _run_on_failure(
    connection: redis.Redis, settings: Settings, document: dict[str, Any], step_id: str, error: dict[str, Any]
) -> None:
    """Enqueue the workflow's on_failure task, once: its id is fixed at submit, and enqueue_batch skips ids
    that exist, so a second failing step (or a re-run) finds it there."""
    handler = document.get("on_failure")
    if handler is None:
        return
    failure = {
        "workflow_id": document["workflow_id"],
        "step_id": step_id,
        "task_id": document["steps"][step_id]["task_id"],
        "error": {"type": error.get("type"), "message": error.get("message")},
    }
    request = TaskRequest(
        task_id=handler["task_id"],
        task_type=handler["task_type"],
        priority=handler["priority"],
        parameters={**handler["parameters"], "failure": failure},
        submitted_at=datetime.now(UTC).isoformat(),
    )
    enqueue_batch(connection, settings, [request])


def cancel_descendants(
    connection: redis.Redis,
    workflow_id: str,
    step_id: str,
    failure_ttl_s: int,
    document: dict[str, Any] | None = None,
    failed: bool = False,
) -> list[str]:
    """Cancel the steps below `step_id` that have not started; return their step ids.

    After a cancel every descendant goes; after a failure (`failed`) the steps
    that tolerate it, and what waits only through them, are spared.
    """
    document = document or load(connection, workflow_id)
    if document is None:
        return []
    steps = document["steps"]
    tolerated = {sid: step.get("allow_failure", []) for sid, step in steps.items()} if failed else None
    below = descendants_of(step_id, {sid: step["depends_on"] for sid, step in steps.items()}, tolerated)
    task_ids = [steps[sid]["task_id"] for sid in below]
    origins = read_fields(connection, task_ids, (ORIGIN_FIELD,))
    found = [
        (sid, task_id, queue_named(connection, origin.decode()))
        for sid, task_id, (origin,) in zip(below, task_ids, origins, strict=True)
        if origin
    ]
    outcomes = cancel_waiting_many(connection, [(task_id, queue, failure_ttl_s) for _, task_id, queue in found])
    canceled = [sid for (sid, _, _), outcome in zip(found, outcomes, strict=True) if outcome == "done"]
    spawners = [  # a map step's spawner waits on the same parents: cancel it too
        (maps.spawner_id(task_id), queue, failure_ttl_s)
        for (sid, task_id, queue), outcome in zip(found, outcomes, strict=True)
        if outcome == "done" and "map" in steps[sid]
    ]
    cancel_waiting_many(connection, spawners)
    return canceled


def list_ids(connection: redis.Redis, start: int, stop: int) -> list[str]:
    """Return workflow ids, newest first, positions start..stop."""
    raw: Any = connection.zrevrange(WORKFLOWS_KEY, start, stop)
    return [value.decode() for value in raw]


def count(connection: redis.Redis) -> int:
    """Return how many workflows are indexed."""
    return int(connection.zcard(WORKFLOWS_KEY))


def delete_all(connection: redis.Redis) -> int:
    """Delete every workflow document and the index (a purge); return how many workflows went."""
    ids = list_ids(connection, 0, -1)
    for workflow_id in ids:
        document = load(connection, workflow_id)
        if document:
            connection.delete(*(waiting_key(step["task_id"]) for step in document["steps"].values()))
    if ids:
        connection.delete(*(workflow_key(i) for i in ids), *(accepted_key(i) for i in ids))
    connection.delete(WORKFLOWS_KEY)
    return len(ids)
