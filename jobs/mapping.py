"""What a map step's own jobs run (core.storage.maps has the layout): the spawner reads the list from an
ancestor's result and creates one task per element; the collector returns the elements' results in order,
or fails the step when more elements failed than it tolerates."""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import get_current_job
from rq.job import Job

from core import workflow
from core.errors import TaskInputError
from core.settings import get_settings
from core.storage import maps, workflows
from jobs.runner import ensure_registry

log = logging.getLogger("taskrelay.worker")

LATE_END_WAIT_S = 5.0
"""How long the collector waits for an element whose end was recorded before its status was written (a worker
records the end right after), in seconds."""


class MapFailed(TaskInputError):
    """More elements of a map step failed than it tolerates (or it had no list); running it again changes nothing."""


def _current() -> tuple[Job, dict[str, Any], dict[str, Any]]:
    ensure_registry()
    job = get_current_job()
    if job is None:
        raise RuntimeError("a map step's job runs only inside an RQ worker")
    document = workflows.load(job.connection, job.meta["workflow_id"])
    if document is None:
        raise MapFailed(f"workflow {job.meta['workflow_id']} no longer exists (expired or purged)")
    return job, document, document["steps"][job.meta["step_id"]]["map"]


def spawn() -> dict[str, Any]:
    """Create the map step's elements from its list (once: a re-run finds them created); return their count."""
    job, document, entry = _current()
    over = workflow.MapOver.from_dict({k: entry[k] for k in workflow.MapOver.__dataclass_fields__})
    template = entry["parameters"]
    sources = {over.source} | {ref[workflow.REF] for ref in workflow.references(template)}
    task_ids = {source: document["steps"][source]["task_id"] for source in sources}
    results = workflows.results_of(job.connection, task_ids, failures=True)
    try:
        items = workflow.map_items(results, over)
        parameters = [workflow.resolve(template, results, item) for item in items]
    except (workflow.ReferenceMissing, KeyError) as exc:
        raise MapFailed(
            str(exc) if isinstance(exc, workflow.ReferenceMissing) else f"step {exc} has no result"
        ) from None
    created = maps.spawn(job.connection, get_settings(), job.meta, entry, parameters)
    log.info("map step spawned", extra={"task_id": job.meta["map_of"], "elements": len(items), "spawned_now": created})
    return {"elements": len(items)}


def collect() -> list[Any]:
    """Return the elements' results in element order (a failed element's is `{"error": {type, message}}`);
    fail with MapFailed when more failed than tolerated, or when the spawner found no list."""
    job, _, entry = _current()
    over = workflow.MapOver.from_dict({k: entry[k] for k in workflow.MapOver.__dataclass_fields__})
    deadline = time.monotonic() + LATE_END_WAIT_S
    while True:
        error, elements = maps.outcome(job.connection, job.id)
        if error is not None:
            raise MapFailed(error)
        if all(state in maps.ENDED_STATUSES for state, _ in elements) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    failed = [(index, value) for index, (state, value) in enumerate(elements) if state != "finished"]
    allowed = over.allowed_failures(len(elements))
    if len(failed) > allowed:
        index, first = failed[0]
        raise MapFailed(
            f"{len(failed)} of {len(elements)} elements failed (tolerated: {allowed}); "
            f"first: element {index}: {first.get('type')}: {first.get('message')}"
        )
    return [value if state == "finished" else {"error": value} for state, value in elements]
