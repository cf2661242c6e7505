"""Workflows over HTTP: submit a DAG of steps, read its state, cancel it.

A submitted workflow is checked whole (core.workflow) before anything is
written, then created in one transaction (core.storage.workflows): steps
without parents are queued, the others wait in RQ's deferred registry until
their parents finish. A step's parameters may take an ancestor's result:
`{"$from": "<step id>", "path": "<JSON Pointer>"}`, resolved when it starts.
When a step fails for good, or is canceled, every step below it is canceled
(REVOKED) and the workflow ends FAILURE (REVOKED when the workflow itself was
canceled): nothing waits forever.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis

from app.cancel import cancel_jobs
from app.errors import InvalidRequest, WorkflowNotFound
from app.ingress import Ingress
from app.schemas import SubmitWorkflow, retention_of
from app.states import FINAL_STATES
from app.tasks import checked_task_type, summarize_fields
from core import registry
from core.connection import redis_errors
from core.errors import UnknownTaskType
from core.model import TaskRequest
from core.settings import Settings
from core.storage import maps, workflows
from core.storage.keys import SUMMARY_FIELDS
from core.storage.records import read_fields
from core.workflow import MapOver, Plan, StepJob, StepSpec, WorkflowInvalid, order, references

ACCEPTED_MESSAGE = "Workflow has been submitted successfully"


def _specs(body: SubmitWorkflow) -> list[StepSpec]:
    specs = []
    for n, step in enumerate(body.steps):
        try:
            spec = registry.get(step.task_type)
        except UnknownTaskType as exc:
            raise InvalidRequest(
                str(exc), [{"field": f"steps[{n}].task_type", "message": str(exc), "allowed": exc.known}]
            ) from None
        over = None
        if step.map is not None:
            over = MapOver(
                step.map.source,
                step.map.path,
                step.map.max_concurrency,
                step.map.tolerated_failures,
                step.map.tolerated_failure_percent,
            )
        if over is None and not any(True for _ in references(step.parameters)):
            try:
                checked_task_type(spec.name, step.parameters)
            except InvalidRequest as exc:  # name the step: steps[n].parameters.<field>
                fields = [{**f, "field": f"steps[{n}].{f['field']}"} for f in exc.fields]
                raise InvalidRequest(f"steps[{n}]: {exc.message}", fields) from None
        priority = step.priority.value if step.priority else None
        parents, tolerated = tuple(step.depends_on), tuple(step.allow_failure)
        keep = retention_of(step.retention)
        specs.append(
            StepSpec(step.id, spec.name, step.parameters, parents, priority, step.max_retries, tolerated, over, keep)
        )
    return specs


def _map_entry(step: StepSpec, default_priority: str) -> dict[str, Any]:
    """What a map step's spawner needs at run time: the list, the template and the elements' task options."""
    assert step.map is not None
    return {
        **step.map.to_dict(),
        "task_type": step.task_type,
        "parameters": step.parameters,
        "priority": step.priority or default_priority,
        "max_retries": step.max_retries,
        **({"retention": step.retention.to_dict()} if step.retention.to_dict() else {}),
    }


def submit(ingress: Ingress, body: SubmitWorkflow, new_id: Callable[[str], str]) -> dict[str, Any]:
    """Check a workflow and hand it to the ingress whole; return the 202 body with the task id of every step.

    `new_id(purpose)` gives each id (app.idempotency.new_id: random, or fixed by an Idempotency-Key).
    """
    try:
        ordered = order(_specs(body))
    except WorkflowInvalid as exc:
        raise InvalidRequest(str(exc), [{"field": exc.field, "message": exc.message}]) from None
    workflow_id = new_id("workflow")
    now = datetime.now(UTC).isoformat()
    task_ids = {step.id: new_id(f"step:{step.id}") for step in ordered}
    default_priority = body.priority.value
    jobs = [
        StepJob(
            step.id,
            TaskRequest(
                task_id=task_ids[step.id],
                task_type=step.task_type,
                priority=step.priority or default_priority,
                parameters=step.parameters,
                submitted_at=now,
                max_retries=step.max_retries,
                retention=step.retention,
            ),
            tuple(task_ids[parent] for parent in step.depends_on),
            tolerates_failure=bool(step.allow_failure),
            is_map=step.map is not None,
        )
        for step in ordered
    ]
    document: dict[str, Any] = {
        "workflow_id": workflow_id,
        "name": body.name,
        "created_at": now,
        "steps": {
            step.id: {
                "task_id": task_ids[step.id],
                "depends_on": list(step.depends_on),
                "allow_failure": list(step.allow_failure),
                **({"map": _map_entry(step, default_priority)} if step.map is not None else {}),
            }
            for step in ordered
        },
    }
    if body.on_failure is not None:
        try:
            spec = registry.get(body.on_failure.task_type)
        except UnknownTaskType as exc:
            field = [{"field": "on_failure.task_type", "message": str(exc), "allowed": exc.known}]
            raise InvalidRequest(str(exc), field) from None
        document["on_failure"] = {
            "task_id": new_id("on_failure"),
            "task_type": spec.name,
            "parameters": body.on_failure.parameters,
            "priority": body.on_failure.priority.value if body.on_failure.priority else default_priority,
        }
    ingress.submit_workflow(Plan(workflow_id, document, tuple(jobs)))
    return {
        "workflow_id": workflow_id,
        "status": "submitted",
        "message": ACCEPTED_MESSAGE,
        "steps": {step_id: {"task_id": task_id} for step_id, task_id in task_ids.items()},
    }


def _not_created(task_id: str, document: dict[str, Any]) -> dict[str, Any]:
    """The entry of a step with no job: still in the RabbitMQ ingress, never created (canceled there), or purged."""
    if document.get("revoked"):
        return {"task_id": task_id, "state": "REVOKED", "status": "canceled"}
    return {"task_id": task_id, "state": "PENDING", "status": "accepted" if document.get("accepted") else "missing"}


def _tolerated(document: dict[str, Any], step_id: str) -> bool:
    """Whether every step waiting on `step_id` tolerates its failure (and some step does wait on it)."""
    children = [step for step in document["steps"].values() if step_id in step["depends_on"]]
    return bool(children) and all(step_id in step.get("allow_failure", ()) for step in children)


def _overall(document: dict[str, Any], states: dict[str, str]) -> str:
    if document.get("revoked"):
        return "REVOKED"
    ok = [state == "SUCCESS" or (state == "FAILURE" and _tolerated(document, sid)) for sid, state in states.items()]
    if all(ok):
        return "SUCCESS"
    if all(state in FINAL_STATES for state in states.values()):
        return "FAILURE"
    if any(state in ("STARTED", "SUCCESS", "FAILURE", "RETRY") for state in states.values()):
        return "STARTED"
    return "PENDING"


def status(connection: redis.Redis, workflow_id: str, with_results: bool = True) -> dict[str, Any]:
    """Return a workflow's state, progress and every step's state, result, attempts, errors and timings.

    Without `with_results` (the list) the steps' results are not read: one HMGET per step is all it costs.
    """
    with redis_errors():
        document = workflows.load(connection, workflow_id, accepted=True)
        if document is None:
            raise WorkflowNotFound(f"no workflow with id {workflow_id!r}; it was never submitted or has expired")
        steps = document["steps"]
        task_ids = {step_id: step["task_id"] for step_id, step in steps.items()}
        rows = read_fields(connection, list(task_ids.values()), SUMMARY_FIELDS)
        summaries = {
            step_id: summarize_fields(task_id, row)
            for (step_id, task_id), row in zip(task_ids.items(), rows, strict=True)
        }
        done = [step_id for step_id, summary in summaries.items() if summary and summary["state"] == "SUCCESS"]
        results = workflows.results_of(connection, {s: task_ids[s] for s in done}) if with_results else {}
        handler = document.get("on_failure")
        handler_row = read_fields(connection, [handler["task_id"]], SUMMARY_FIELDS)[0] if handler else None
        mapped = [step_id for step_id, step in steps.items() if "map" in step]
        fanned = dict(zip(mapped, maps.progress(connection, [task_ids[s] for s in mapped]), strict=True))
    entries = {}
    for step_id, summary in summaries.items():
        entry = summary or _not_created(task_ids[step_id], document)
        entries[step_id] = {
            **entry,
            "depends_on": steps[step_id]["depends_on"],
            "allow_failure": steps[step_id].get("allow_failure", []),
            "result": results.get(step_id),
        }
        if step_id in fanned:
            total, ended = fanned[step_id]
            entries[step_id]["map"] = {"elements": total, "ended": ended}
    on_failure = None
    if handler is not None and handler_row is not None:
        summary = summarize_fields(handler["task_id"], handler_row)
        on_failure = {"task_id": handler["task_id"], "task_type": handler["task_type"]}
        on_failure["state"] = summary["state"] if summary else None  # None: not triggered
    listed = _listed(workflow_id, document, {step_id: entry["state"] for step_id, entry in entries.items()})
    return {**listed, "on_failure": on_failure, "steps": entries}


def _listed(workflow_id: str, document: dict[str, Any], by_step: dict[str, str]) -> dict[str, Any]:
    """Return a workflow's entry in the list (and the head of its status): id, name, state, created_at, progress."""
    finished = sum(1 for state in by_step.values() if state in FINAL_STATES)
    return {
        "workflow_id": workflow_id,
        "name": document.get("name"),
        "state": _overall(document, by_step),
        "created_at": document.get("created_at"),
        "progress": {"done": finished, "total": len(by_step), "percent": round(100.0 * finished / len(by_step), 1)},
    }


LISTED_PER_ROUND = 500
"""Workflows whose list entries one pair of pipelines reads (documents, then their steps' fields)."""


def listed(connection: redis.Redis, workflow_ids: list[str]) -> list[dict[str, Any]]:
    """Return the list entries of `workflow_ids`, in order, leaving out those that are gone (expired, purged).

    Two or three round trips per LISTED_PER_ROUND workflows, whatever their number of steps: their
    documents in one pipeline, then one HMGET per step of all of them in another. Call within redis_errors().
    """
    entries: list[dict[str, Any]] = []
    for start in range(0, len(workflow_ids), LISTED_PER_ROUND):
        chunk = workflow_ids[start : start + LISTED_PER_ROUND]
        found = [
            (workflow_id, document)
            for workflow_id, document in zip(chunk, workflows.load_many(connection, chunk, accepted=True), strict=True)
            if document is not None
        ]
        task_ids = [step["task_id"] for _, document in found for step in document["steps"].values()]
        rows = iter(read_fields(connection, task_ids, SUMMARY_FIELDS))
        for workflow_id, document in found:
            by_step = {}
            for step_id, step in document["steps"].items():
                summary = summarize_fields(step["task_id"], next(rows)) or _not_created(step["task_id"], document)
                by_step[step_id] = summary["state"]
            entries.append(_listed(workflow_id, document, by_step))
    return entries


def cancel(connection: redis.Redis, settings: Settings, workflow_id: str) -> dict[str, Any]:
    """Cancel every unfinished step of a workflow; it ends REVOKED."""
    with redis_errors():
        document = workflows.load(connection, workflow_id, accepted=True)
        if document is None:
            raise WorkflowNotFound(f"no workflow with id {workflow_id!r}; it was never submitted or has expired")
        workflows.mark_revoked(connection, workflow_id)
    # Children before parents (the document lists parents first), so a parent that ends meanwhile releases
    # nothing; no cascade: every step is canceled here anyway, all together (cancel_jobs: the waiting ones in
    # one pipeline per 500, the running ones with one stop request per worker). A step that is no job (its
    # workflow still in the RabbitMQ ingress, or purged) is skipped: the revoked mark keeps the bridge from
    # creating it.
    job_ids: list[str] = []
    for step in reversed(list(document["steps"].values())):
        job_ids.append(step["task_id"])
        if "map" in step:  # its spawner and elements
            with redis_errors():
                job_ids.extend(maps.unfinished_jobs(connection, step["task_id"]))
    cancel_jobs(connection, settings, job_ids)
    steps = status(connection, workflow_id)["steps"]
    revoked = [step_id for step_id, entry in steps.items() if entry["state"] == "REVOKED"]
    return {"workflow_id": workflow_id, "state": "REVOKED", "revoked_steps": revoked}


def list_workflows(connection: redis.Redis, limit: int, offset: int, state: str | None = None) -> dict[str, Any]:
    """Return a page of workflows, newest first, each with its state and progress.

    With `state`, every workflow's state is computed to filter (and count) them: a scan
    (pipelined, see `listed`), fine for tens of thousands of workflows, not for millions.
    """
    with redis_errors():
        if state is None:
            entries = listed(connection, workflows.list_ids(connection, offset, offset + limit - 1))
            total = workflows.count(connection)
        else:
            matching = [
                entry for entry in listed(connection, workflows.list_ids(connection, 0, -1)) if entry["state"] == state
            ]
            entries, total = matching[offset : offset + limit], len(matching)
    filters = {"state": state}
    return {"workflows": entries, "total": total, "limit": limit, "offset": offset, "filters": filters}
