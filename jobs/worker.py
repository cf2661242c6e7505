"""Run one RQ worker on the three priority queues, highest first, with RQ's scheduler.

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

from rq import SimpleWorker, Worker
from rq.worker import BaseWorker

from jobs import logs, registry
from jobs.errors import ConfigError
from jobs.queues import SERIALIZER, all_queues, connect
from jobs.settings import Settings

WORKER_CLASSES: dict[str, type[BaseWorker]] = {"fork": Worker, "simple": SimpleWorker}
"""fork: a fresh child process per task (isolation, RQ's default); simple: tasks run in the worker itself (faster)."""


def build_worker(settings: Settings, worker_class: str = "fork", name: str | None = None) -> BaseWorker:
    """Return a worker listening on high, normal, low (in that order) with JSON jobs."""
    try:
        cls = WORKER_CLASSES[worker_class]
    except KeyError:
        raise ConfigError(f"WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)}, got {worker_class!r}") from None
    registry.load(settings.task_modules)
    connection = connect(settings.redis_url)
    return cls(
        all_queues(connection),
        connection=connection,
        serializer=SERIALIZER,
        name=name,
        maintenance_interval=settings.maintenance_interval_s,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, start the worker and block until it is told to stop."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    parser.add_argument("--simple", action="store_true", help="run tasks in this process instead of forking")
    parser.add_argument("--name", default=None, help="worker name shown in rq info and the dashboard")
    args = parser.parse_args(argv)
    level = os.environ.get("LOG_LEVEL", "INFO")
    logs.setup(level)
    try:
        settings = Settings.from_env()
        worker_class = "simple" if args.simple else os.environ.get("WORKER_CLASS", "fork")
        worker = build_worker(settings, worker_class, args.name)
    except ConfigError as exc:
        logging.getLogger("taskrelay.worker").error("cannot start worker: %s", exc)
        return 2
    worker.work(burst=args.burst, with_scheduler=True, logging_level=level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
