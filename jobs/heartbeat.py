"""RQ's workers as Taskrelay runs them: a short running-task registration, so a killed worker's task is retried
within seconds, housekeeping in every maintenance pass (history bounded by count, lost workflow releases), and
no task taken from a paused queue (core.storage.paused).

`batch_worker.BatchWorker` builds on HeartbeatSimpleWorker; `worker.build_worker` picks among the three.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import suppress
from typing import Any

from redis.client import Pipeline
from rq import Queue, SimpleWorker, Worker
from rq.command import parse_payload
from rq.job import Job, JobStatus

from core.connection import redis_errors
from core.errors import BackendUnavailable, StorageError
from core.settings import DEFAULT_KEEP_FAILED, DEFAULT_KEEP_FINISHED
from core.storage import metrics, retention, workflows
from core.storage.paused import PausableQueues
from jobs import runner
from jobs.interrupt import CancellablePenalty, interrupt

log = logging.getLogger("taskrelay.worker")


class ShortHeartbeat:
    """Register a running task for three heartbeat intervals plus 5 s, not its whole timeout.

    RQ registers a running job for its timeout plus 60 s (six minutes for a 300 s
    task), so a task whose worker was killed waits that long to be retried.
    Renewed every job_monitoring_interval while the task runs, a short
    registration lets the first maintenance pass after it lapses retry the task.
    """

    job_monitoring_interval: int

    def get_heartbeat_ttl(self, job: Job | None) -> int:
        return int(self.job_monitoring_interval) * 3 + 5


class Housekeeping:
    """After RQ's maintenance pass: delete the oldest finished and failed tasks beyond their task type's count and
    beyond KEEP_FINISHED/KEEP_FAILED, and release workflow steps whose parents all finished but whose release was
    lost with a killed worker."""

    keep_finished = DEFAULT_KEEP_FINISHED
    keep_failed = DEFAULT_KEEP_FAILED
    queues: list[Queue]
    connection: Any

    def run_maintenance_tasks(self) -> None:
        super().run_maintenance_tasks()  # type: ignore[misc]
        with suppress(BackendUnavailable, StorageError), redis_errors():
            removed = retention.trim(self.connection, self.queues, self.keep_finished, self.keep_failed)
            if removed:
                log.info("trimmed %s finished or failed tasks beyond the kept counts", removed)
            if released := workflows.release_stuck(self.connection, self.queues):
                log.warning("released the waiting steps of %s finished workflow steps a lost worker left", released)


class TypeHistory:
    """Index each task that ends with a history count of its own (a submit's or its task type's) under its task
    type, in the pipeline RQ ends it with: one ZADD, nothing for the others (core.storage.retention)."""

    def cleanup_execution(self, job: Job, pipeline: Pipeline) -> None:
        super().cleanup_execution(job, pipeline)  # type: ignore[misc]
        retention.note_ended(pipeline, job)


class MapBookkeeping:
    """Record a map element's end once RQ wrote its success or final failure (the batch worker records it after
    flushing its successes, core.storage.workflows.release_on), so the map's collector runs only when
    every element's outcome is readable."""

    connection: Any

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any) -> None:
        super().handle_job_success(job, queue, started_job_registry)  # type: ignore[misc]
        with suppress(BackendUnavailable, StorageError), redis_errors():
            workflows.element_ended(self.connection, job)

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry, exc_string=exc_string)  # type: ignore[misc]
        if (job.meta or {}).get("map_index") is None:
            return
        with suppress(BackendUnavailable, StorageError), redis_errors():
            if job.get_status(refresh=True) in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                workflows.element_ended(self.connection, job)


class SuccessCounting:
    """Count each success (taskrelay_tasks_finished_total and the runtime histogram) once RQ wrote it: one round
    trip of its own for the simple and fork workers (the batch worker counts in its success pipeline and never
    comes here). Failures are counted by jobs.runner.on_failure, for every worker class."""

    connection: Any

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any) -> None:
        super().handle_job_success(job, queue, started_job_registry)  # type: ignore[misc]
        tally = metrics.Tally()
        tally.finished(
            metrics.task_type_of(job), queue.name, "SUCCESS", metrics.runtime_of(job), metrics.waited_of(job)
        )
        with suppress(BackendUnavailable, StorageError), redis_errors():
            metrics.record(self.connection, tally)


class StoppedCounting:
    """Count a task its forking worker stopped on request (a cancel) as REVOKED once RQ recorded it stopped: RQ
    kills the work horse, so jobs.runner.on_failure, which counts a revoked task for the other worker classes,
    never runs. (No round trip of its own when nothing was stopped: the status is the one RQ just set.)"""

    connection: Any

    def handle_job_failure(
        self, job: Job, queue: Queue, started_job_registry: Any = None, exc_string: str = ""
    ) -> None:
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry, exc_string=exc_string)  # type: ignore[misc]
        if job.get_status(refresh=False) == JobStatus.STOPPED:
            runner.count_failed_attempt(self.connection, job, "REVOKED")


class HeartbeatWorker(
    StoppedCounting,
    PausableQueues,
    SuccessCounting,
    MapBookkeeping,
    TypeHistory,
    Housekeeping,
    ShortHeartbeat,
    Worker,
):
    """RQ's forking worker (its monitor loop renews the heartbeat) with a short registration; skips paused queues."""


class HeartbeatSimpleWorker(
    PausableQueues, SuccessCounting, MapBookkeeping, TypeHistory, Housekeeping, ShortHeartbeat, SimpleWorker
):
    """A SimpleWorker whose running task keeps a short heartbeat, renewed by one long-lived thread,
    and which a cancel interrupts (jobs.interrupt; RQ then marks the job stopped, the API revoked); it skips
    paused queues (core.storage.paused)."""

    death_penalty_class = CancellablePenalty

    def handle_payload(self, message: Any) -> None:
        super().handle_payload(message)  # RQ notes a stop-job of the running job as intended (no retry)
        payload = parse_payload(message)
        if payload.get("command") == "stop-job" and payload.get("job_id") == self.get_current_job_id():
            interrupt(payload["job_id"])

    _beating: Job | None = None
    _beater: threading.Thread | None = None

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._start_beater()
        self._beating = job
        try:
            super().execute_job(job, queue)
        finally:
            self._beating = None

    def _start_beater(self) -> None:
        if self._beater is None:
            self._beater = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)
            self._beater.start()

    def _beat(self) -> None:
        while True:
            time.sleep(self.job_monitoring_interval)
            self._beat_once()

    def _beat_once(self) -> None:
        """Renew the running task's heartbeat, if a task is running."""
        job = self._beating
        if job is None or self.execution is None:
            return
        # The task may end while we beat; a late heartbeat is harmless (RQ writes it with XX).
        with suppress(BackendUnavailable, StorageError, AttributeError), redis_errors():
            self.maintain_heartbeats(job)
