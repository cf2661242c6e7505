"""Priority under a slow backlog: Taskrelay side by side with Celery, one high task behind many slow low ones.

    .venv/bin/python -m bench.priority [--low 120] [--sleep-s 0.2] [--smoke]

Each config gets --low tasks of --sleep-s seconds on its low-priority queue and
2 worker processes. Once each worker has finished some (the workers are warm),
one high task is submitted. Reported: how long the high task waited before it
started, and how many low tasks started after it was queued (a strict priority
order would start at most the one each worker was between). Configs:
  taskrelay-batch  WORKER_CLASS=batch (the default), direct enqueue
  taskrelay-fork   WORKER_CLASS=fork (RQ's forking worker)
  celery           prefork -c 2 on queues high,normal,low; default prefetch (4 per process)
  celery-acks-late the same with worker_prefetch_multiplier=1 and task_acks_late
Every task records when it started in a Redis hash, the same way in each system.
Flushes Redis databases 13 and 14. Writes bench/results/priority.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import redis

from bench.ingress import BENCH_DBS, REDIS_BASE
from bench.procs import child_env, save_results, stop_all, wait_for
from bench.tasks import STARTED_KEY

ROOT = Path(__file__).resolve().parent.parent
DB, CELERY_BACKEND_DB = BENCH_DBS[0], BENCH_DBS[1]
WARM = 6
"""Low tasks finished before the high one is submitted."""


def _measure(connection: redis.Redis, high_id: str, queued_at: float) -> dict:
    raw: dict[bytes, bytes] = connection.hgetall(STARTED_KEY)  # type: ignore[assignment]
    started = {k.decode(): float(v) for k, v in raw.items()}
    high_started = started[high_id]
    overtook = sum(1 for task, at in started.items() if task != high_id and queued_at < at < high_started)
    return {"wait_ms": (high_started - queued_at) * 1000, "low_started_after": overtook}


def run_taskrelay(worker_class: str, lows: int, sleep_s: float) -> dict:
    from core.model import TaskRequest
    from core.settings import Settings
    from core.storage.enqueue import enqueue_batch
    from core.storage.keys import finished_key

    url = f"{REDIS_BASE}/{DB}"
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    settings = Settings.from_env({"REDIS_URL": url, "TASKRELAY_TASK_MODULES": "bench.tasks"})
    from core import registry

    registry.load(settings.task_modules)
    stamp = datetime.now(UTC).isoformat()
    low = [TaskRequest(f"low-{n}", "bench_sleep", "low", {"s": sleep_s, "id": f"low-{n}"}, stamp) for n in range(lows)]
    enqueue_batch(connection, settings, low)
    env = child_env(REDIS_URL=url, WORKER_CLASS=worker_class, TASKRELAY_TASK_MODULES="bench.tasks")
    workers = [subprocess.Popen([sys.executable, "-m", "jobs.worker"], cwd=ROOT, env=env) for _ in range(2)]
    try:
        wait_for(lambda: connection.zcard(finished_key("low_priority")) >= WARM, 60, "the workers to warm up")
        high = TaskRequest("high-1", "bench_sleep", "high", {"s": 0, "id": "high-1"}, stamp)
        queued_at = time.time()
        enqueue_batch(connection, settings, [high])
        wait_for(lambda: connection.hexists(STARTED_KEY, "high-1"), 60, "the high task to start")
        return _measure(connection, "high-1", queued_at)
    finally:
        stop_all(workers)
        connection.flushdb()


def run_celery(acks_late: bool, lows: int, sleep_s: float) -> dict:
    url = f"{REDIS_BASE}/{CELERY_BACKEND_DB}"
    os.environ["BENCH_CELERY_BACKEND"] = url
    from bench.celery_app import STOP_SIGNAL, app, delete_queue

    connection = redis.Redis.from_url(url)
    connection.flushdb()
    tag = uuid.uuid4().hex[:8]
    queues = {p: f"bench.{p}.{tag}" for p in ("high", "normal", "low")}
    task = app.tasks["bench.sleep"]
    with app.producer_or_acquire() as producer:
        for n in range(lows):
            task.apply_async(args=(sleep_s, f"low-{n}"), queue=queues["low"], producer=producer)
    argv = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-P", "prefork", "-c", "2"]
    argv += ["-Q", ",".join(queues.values()), "--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
    argv += ["--without-heartbeat"]
    extra = {"BENCH_CELERY_BACKEND": url}
    if acks_late:
        extra.update(BENCH_CELERY_PREFETCH="1", BENCH_CELERY_ACKS_LATE="1")
    worker = subprocess.Popen(argv, cwd=ROOT, env=child_env(**extra))
    try:
        wait_for(lambda: connection.hlen(STARTED_KEY) >= WARM + 2, 60, "the workers to warm up")
        queued_at = time.time()
        task.apply_async(args=(0, "high-1"), queue=queues["high"])
        wait_for(lambda: connection.hexists(STARTED_KEY, "high-1"), 120, "the high task to start")
        return _measure(connection, "high-1", queued_at)
    finally:
        stop_all([worker], sig=STOP_SIGNAL)
        for queue in queues.values():
            delete_queue(queue)
        connection.flushdb()


CONFIGS: dict[str, Callable[[int, float], dict]] = {
    "taskrelay-batch": lambda lows, s: run_taskrelay("batch", lows, s),
    "taskrelay-fork": lambda lows, s: run_taskrelay("fork", lows, s),
    "celery": lambda lows, s: run_celery(False, lows, s),
    "celery-acks-late": lambda lows, s: run_celery(True, lows, s),
}


def main() -> None:
    """Run every config once, print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--low", type=int, default=120, help="low-priority tasks in the backlog")
    parser.add_argument("--sleep-s", type=float, default=0.2, help="how long each low task runs")
    parser.add_argument("--smoke", action="store_true", help="a small, fast run: only proves the harness works")
    args = parser.parse_args()
    lows, sleep_s = (20, 0.02) if args.smoke else (args.low, args.sleep_s)
    rows = {}
    for name, run in CONFIGS.items():
        rows[name] = run(lows, sleep_s)
        print(
            f"{name:17} high waited {rows[name]['wait_ms']:8.0f} ms; low started after it: "
            f"{rows[name]['low_started_after']}",
            flush=True,
        )
    lines = [
        f"Priority under a slow backlog ({platform.machine()}, {os.cpu_count()} cores; {lows} low tasks of "
        f"{sleep_s * 1000:.0f} ms, 2 worker processes, one high task submitted once {WARM} lows finished)",
        "",
        "| config | high task waited (ms) | low tasks started after it was queued |",
        "|---|---:|---:|",
        *(f"| {name} | {row['wait_ms']:.0f} | {row['low_started_after']} |" for name, row in rows.items()),
        "",
    ]
    name = "priority-smoke" if args.smoke else "priority"
    save_results(name, "\n".join(lines), {"low": lows, "sleep_s": sleep_s, "rows": rows})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
