"""The function every RQ job runs, and the callback RQ calls when an attempt fails.

`run(task_type, parameters)` looks the task type up in the registry, counts the
attempt in the job's meta, runs it and logs the outcome. `on_failure` records
each failed attempt's error (type, message, time) in the job's meta, ends
retries early for errors retrying cannot fix, and notifies once the failure is
final. Full tracebacks go to the log only, never into the job.
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job

from core import registry, workflow
from core.connection import redis_errors
from core.errors import BackendUnavailable, StorageError, TaskInputError, UnknownTaskType
from core.settings import get_settings
from core.storage import maps, metrics, workflows
from jobs import notify
from jobs.interrupt import TaskRevoked

log = logging.getLogger("taskrelay.worker")

MAX_KEPT_ERRORS = 20
"""Errors kept per task: the first and the latest attempts matter most."""
MAX_ERROR_MESSAGE_CHARS = 2000
NON_RETRYABLE = (TaskInputError, UnknownTaskType)

_loaded = False


def ensure_registry() -> None:
    """Load the task types once per process (RQ may run a job in a worker that never ran our start-up)."""
    # A plain `rq worker` never ran our worker's start-up, so load the task types on first use.
    global _loaded
    if not _loaded:
        registry.load(get_settings().task_modules)
        _loaded = True


def _context(job: Job | None, task_type: str) -> dict[str, Any]:
    if job is None:
        return {"task_type": task_type}
    return {
        "task_id": job.id,
        "task_type": task_type,
        "queue": job.origin,
        "attempt": job.meta.get("attempts"),
    }


ATTEMPT_BEGUN = "_taskrelay_attempt_begun"
"""Set on a Job whose worker counted this attempt itself (begin_attempt) and writes its meta with the outcome."""


def begin_attempt(job: Job) -> None:
    """Count one more attempt of `job` in its meta, in memory; the caller writes it (the batch worker does)."""
    job.meta["attempts"] = int(job.meta.get("attempts", 0)) + 1
    job.meta.pop("progress", None)  # an earlier attempt's
    setattr(job, ATTEMPT_BEGUN, True)


def run(task_type: str, parameters: dict[str, Any]) -> Any:
    """Run one attempt of task `task_type` with `parameters`; return its JSON-able result."""
    ensure_registry()
    job = get_current_job()
    if job is not None and not getattr(job, ATTEMPT_BEGUN, False):
        begin_attempt(job)
        job.save_meta()  # RQ's own workers: the attempt is counted before the task runs
    context = _context(job, task_type)
    spec = registry.get(task_type)
    log.info("task started", extra=context)
    started = time.perf_counter()
    try:
        if job is not None and job.meta.get("workflow_id"):
            parameters = _resolved(job, parameters)
        result = spec.func(spec.parse_params(parameters))
    except Exception as exc:
        duration_ms = round((time.perf_counter() - started) * 1000, 3)
        log.warning("task attempt failed", extra={**context, "duration_ms": duration_ms, "error": repr(exc)})
        raise
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    log.info("task succeeded", extra={**context, "duration_ms": duration_ms, "state": "SUCCESS"})
    return result


def _resolved(job: Job, parameters: dict[str, Any]) -> dict[str, Any]:
    """Replace a workflow step's `{"$from": ...}` references by its ancestors' results (TaskInputError if absent)."""
    sources = {ref["$from"] for ref in workflow.references(parameters)}
    if not sources:
        return parameters
    document = workflows.load(job.connection, job.meta["workflow_id"])
    if document is None:
        raise TaskInputError(f"workflow {job.meta['workflow_id']} no longer exists (expired or purged)")
    task_ids = {source: document["steps"][source]["task_id"] for source in sources}
    results = workflows.results_of(job.connection, task_ids, failures=True)
    try:
        return workflow.resolve(parameters, results)
    except KeyError as exc:
        raise TaskInputError(f"step {exc.args[0]!r} has no result (it did not succeed)") from None
    except workflow.ReferenceMissing as exc:
        raise TaskInputError(str(exc)) from None


def report_progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Publish the running task's progress; readable in its status as `progress`.

    Call it from inside a task function; outside a job it does nothing.
    """
    job = get_current_job()
    if job is None:
        return
    progress: dict[str, Any] = {"done": done, "total": total, "message": message}
    if total:
        progress["percent"] = round(100.0 * done / total, 1)
    job.meta["progress"] = progress
    job.save_meta()


def describe_error(exc_type: type[BaseException] | None, exc_value: BaseException | None) -> dict[str, Any]:
    """Return the client-safe record of one failed attempt: type, message and time, no traceback."""
    name = exc_type.__name__ if exc_type is not None else "Error"
    message = str(exc_value) if exc_value is not None else ""
    if exc_type is not None and issubclass(exc_type, AbandonedJobError) and not message:
        message = "the worker running this task stopped before it finished (process killed or lost)"
    return {
        "type": name,
        "message": message[:MAX_ERROR_MESSAGE_CHARS],
        "at": datetime.now(UTC).isoformat(),
    }


def count_failed_attempt(connection: Any, job: Job, outcome: str) -> None:
    """Count a failed attempt: a retry, or a task that ended (FAILURE, REVOKED); one round trip, best effort."""
    tally = metrics.Tally()
    if outcome == "RETRY":
        tally.retried(metrics.task_type_of(job))
    else:
        tally.finished(metrics.task_type_of(job), job.origin, outcome)
    with suppress(BackendUnavailable, StorageError), redis_errors():
        metrics.record(connection, tally)


def on_failure(job: Job, connection: Any, exc_type: Any, exc_value: Any, traceback: Any) -> None:
    """Record a failed attempt; stop retrying for bad input; notify when the failure is final."""
    if isinstance(exc_type, type) and issubclass(exc_type, AbandonedJobError) and not job.meta.get("attempts"):
        # Abandoned before any attempt began (its worker was lost between taking it and running it):
        # it never ran, so it is requeued whatever its retries, and no attempt is counted against it.
        job.retries_left = (job.retries_left or 0) + 1
        log.warning("task abandoned by a lost worker before it started; requeueing it", extra=_context(job, ""))
        return
    if isinstance(exc_type, type) and issubclass(exc_type, TaskRevoked):
        job.retries_left = 0  # canceled: never retried, no failure recorded or notified
        log.info("task canceled while it ran", extra=_context(job, ""))
        count_failed_attempt(connection, job, "REVOKED")
        return
    error = describe_error(exc_type, exc_value)
    error["attempt"] = job.meta.get("attempts", 0)
    if isinstance(exc_value, NON_RETRYABLE):
        job.retries_left = 0
    errors = list(job.meta.get("errors", []))
    errors.append(error)
    if len(errors) > MAX_KEPT_ERRORS:
        errors = [errors[0], *errors[-(MAX_KEPT_ERRORS - 1) :]]
    job.meta["errors"] = errors
    job.save_meta()
    final = not job.should_retry
    count_failed_attempt(connection, job, "FAILURE" if final else "RETRY")
    context = {
        **_context(job, job.meta.get("task_type", job.description or "")),
        "error": f"{error['type']}: {error['message']}",
        "state": "FAILURE" if final else "RETRY",
    }
    has_traceback = isinstance(exc_value, BaseException) and exc_value.__traceback__ is not None
    log.error(
        "task failed for good" if final else "task attempt failed; will retry",
        extra=context,
        exc_info=(exc_type, exc_value, exc_value.__traceback__) if has_traceback else None,
    )
    if final:
        settings = get_settings()
        if job.meta.get("map_role") == "spawn":  # no list to map over: the collector fails the step with this
            maps.fail(connection, job.meta["map_of"], error["message"], settings.failure_ttl_s)
        elif job.meta.get("map_index") is not None:
            pass  # one element: the worker records its end once the failure is written (jobs.heartbeat)
        elif job.meta.get("workflow_id"):
            # Its descendants can no longer run: cancel them now rather than leave them waiting forever.
            workflows.settle_failed(connection, settings, job.meta["workflow_id"], job.meta["step_id"], error)
        notify.task_failed(job, error, get_settings())
