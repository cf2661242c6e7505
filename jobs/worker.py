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
import sys
import time
import uuid
from typing import Any

from rq.worker import BaseWorker

from core import registry
from core.connection import connect, eviction_warning, redis_errors
from core.errors import BackendUnavailable, ConfigError
from core.settings import Settings, starting
from core.storage.queues import SERIALIZER, worker_queues
from jobs.batch_worker import BatchWorker
from jobs.heartbeat import HeartbeatSimpleWorker, HeartbeatWorker

NAME_LENGTH = 10
"""Hex digits of a worker's default name (RQ's is 32): every job a worker runs stores its name, and 10 digits
(40 random bits) keep a no-op task's job hash in a smaller allocation (README "Redis memory")."""
RECONNECT_MAX_S = 30.0
"""Longest wait between attempts to restart the work loop after losing Redis, in seconds."""

WORKER_CLASS_OF: dict[str, type[HeartbeatWorker] | type[HeartbeatSimpleWorker]] = {
    "batch": BatchWorker,
    "fork": HeartbeatWorker,
    "simple": HeartbeatSimpleWorker,
}
"""WORKER_CLASS -> the RQ worker class (core.settings.WORKER_CLASSES says what each is for)."""

log = logging.getLogger("taskrelay.worker")


def default_name() -> str:
    """Return a new worker's name when none is given: NAME_LENGTH random hex digits (rq info and rq-dashboard
    show its host and pid beside it)."""
    return uuid.uuid4().hex[:NAME_LENGTH]


def build_worker(settings: Settings, worker_class: str | None = None, name: str | None = None) -> BaseWorker:
    """Return a worker listening on due schedules, high, normal, low (in that order) with JSON jobs.

    `worker_class` defaults to settings.worker_class (WORKER_CLASS).
    """
    worker_class = worker_class or settings.worker_class
    if worker_class not in WORKER_CLASS_OF:
        raise ConfigError(f"WORKER_CLASS must be one of {', '.join(WORKER_CLASS_OF)}, got {worker_class!r}")
    cls = WORKER_CLASS_OF[worker_class]
    registry.load(settings.task_modules)
    registry.build_models()
    connection = connect(settings.redis_url)
    options: dict[str, Any] = {
        "name": name or default_name(),
        "maintenance_interval": settings.maintenance_interval_s,
        # An idle worker waits in BLPOP for worker_ttl - 15 s and only runs maintenance when it wakes;
        # RQ's default (420) would leave a dead worker's task unnoticed for up to seven minutes.
        "worker_ttl": settings.maintenance_interval_s + 15,
    }
    worker = cls(
        worker_queues(connection),
        connection=connection,
        serializer=SERIALIZER,
        job_monitoring_interval=settings.job_heartbeat_s,
        **options,
    )
    worker.keep_finished, worker.keep_failed = settings.keep_finished, settings.keep_failed
    return worker


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the worker and block until it is told to stop (restarting it if Redis is lost)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--simple", action="store_true", help="run tasks in this process instead of forking")
    parser.add_argument("--name", default=None, help="worker name shown in rq info and the dashboard")
    args = parser.parse_args(argv)
    settings = starting("worker")
    if settings is None:
        return 2
    worker_class = "simple" if args.simple else settings.worker_class
    try:
        worker = build_worker(settings, worker_class, args.name)
    except ConfigError as exc:
        log.error("cannot start worker: %s", exc)
        return 2
    if warning := eviction_warning(worker.connection):
        log.warning(warning)
    backoff = 1.0
    while True:
        try:
            with redis_errors():
                worker.work(burst=args.burst, with_scheduler=True, logging_level=settings.log_level)
            return 0
        except BackendUnavailable as exc:
            # RQ's loop retries a lost Redis while idle, but not mid-task, nor a full one (BackendFull):
            # start over once it answers and takes writes.
            log.error("Redis failed (%s); restarting the work loop in %.0f s", exc, backoff)
            time.sleep(backoff)
            backoff = min(RECONNECT_MAX_S, backoff * 2)
            worker = build_worker(settings, worker_class, args.name)


if __name__ == "__main__":
    sys.exit(main())
