"""Run one RQ worker on the priority queues, highest first (due schedules before all), with RQ's scheduler.

    python -m jobs.worker [--burst] [--simple] [--name NAME]

Configured by the environment (REDIS_URL, WORKER_CLASS, LOG_LEVEL, ...). The
scheduler thread moves delayed tasks and retry back-offs onto their queues;
maintenance every MAINTENANCE_INTERVAL_S seconds finds jobs whose worker died
and retries or fails them.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from contextlib import suppress
from typing import Any

import redis
from rq import Queue, SimpleWorker, Worker
from rq.job import Job
from rq.worker import BaseWorker

from jobs import logs, registry
from jobs.errors import ConfigError
from jobs.queues import SERIALIZER, connect, worker_queues
from jobs.settings import Settings

RECONNECT_MAX_S = 30.0
"""Longest wait between attempts to restart the work loop after losing Redis, in seconds."""

log = logging.getLogger("taskrelay.worker")


class ShortHeartbeat:
    """Register a running task for three heartbeat intervals plus 5 s, not its whole timeout.

    RQ registers a running job for its timeout plus 60 s (six minutes for a 300 s
    task), so a task whose worker was killed waits that long to be retried.
    Renewed every job_monitoring_interval while the task runs, a short
    registration lets the first maintenance pass after it lapses retry the task.
    """

    job_monitoring_interval: int

    def get_heartbeat_ttl(self, job: Job) -> int:
        return int(self.job_monitoring_interval) * 3 + 5


class HeartbeatWorker(ShortHeartbeat, Worker):
    """RQ's forking worker (its monitor loop renews the heartbeat) with a short registration."""


class HeartbeatSimpleWorker(ShortHeartbeat, SimpleWorker):
    """A SimpleWorker whose running task keeps a short heartbeat, renewed by one long-lived thread."""

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
        with suppress(redis.exceptions.RedisError, AttributeError):
            self.maintain_heartbeats(job)


WORKER_CLASSES: dict[str, type[BaseWorker]] = {"fork": HeartbeatWorker, "simple": HeartbeatSimpleWorker}
"""fork: a fresh child process per task (isolation, RQ's default); simple: tasks run in the worker itself (faster);
batch (jobs.batch_worker): like simple, claiming and recording tasks a batch at a time (fastest)."""


DEFAULT_WORKER_CLASS = "batch"
"""Tasks run in the worker process, claimed and recorded a batch at a time; `fork` isolates each task instead."""


def build_worker(settings: Settings, worker_class: str = DEFAULT_WORKER_CLASS, name: str | None = None) -> BaseWorker:
    """Return a worker listening on high, normal, low (in that order) with JSON jobs."""
    if worker_class == "batch":
        from jobs.batch_worker import BatchWorker  # it builds on the classes here

        cls: type[BaseWorker] = BatchWorker
    elif worker_class in WORKER_CLASSES:
        cls = WORKER_CLASSES[worker_class]
    else:
        allowed = ", ".join([*WORKER_CLASSES, "batch"])
        raise ConfigError(f"WORKER_CLASS must be one of {allowed}, got {worker_class!r}") from None
    registry.load(settings.task_modules)
    connection = connect(settings.redis_url)
    options: dict[str, Any] = {
        "name": name,
        "maintenance_interval": settings.maintenance_interval_s,
        # An idle worker waits in BLPOP for worker_ttl - 15 s and only runs maintenance when it wakes;
        # RQ's default (420) would leave a dead worker's task unnoticed for up to seven minutes.
        "worker_ttl": settings.maintenance_interval_s + 15,
    }
    return cls(
        worker_queues(connection),
        connection=connection,
        serializer=SERIALIZER,
        job_monitoring_interval=settings.job_heartbeat_s,
        **options,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the worker and block until it is told to stop (restarting it if Redis is lost)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--simple", action="store_true", help="run tasks in this process instead of forking")
    parser.add_argument("--name", default=None, help="worker name shown in rq info and the dashboard")
    args = parser.parse_args(argv)
    level = os.environ.get("LOG_LEVEL", "INFO")
    logs.setup(level)
    try:
        settings = Settings.from_env()
        worker_class = "simple" if args.simple else os.environ.get("WORKER_CLASS") or DEFAULT_WORKER_CLASS
        worker = build_worker(settings, worker_class, args.name)
    except ConfigError as exc:
        log.error("cannot start worker: %s", exc)
        return 2
    backoff = 1.0
    while True:
        try:
            worker.work(burst=args.burst, with_scheduler=True, logging_level=level)
            return 0
        except redis.exceptions.ConnectionError as exc:
            # RQ's loop retries a lost Redis while idle, but not mid-task: start over once it answers.
            log.error("lost Redis (%s); restarting the work loop in %.0f s", exc, backoff)
            time.sleep(backoff)
            backoff = min(RECONNECT_MAX_S, backoff * 2)
            worker = build_worker(settings, worker_class, args.name)


if __name__ == "__main__":
    sys.exit(main())
