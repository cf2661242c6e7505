"""Redis memory per finished task: Taskrelay with Redis's defaults and with the two settings README recommends,
beside a Celery result record, each measured on a private redis-server from INFO memory deltas.

    .venv/bin/python -m bench.memory [--tasks 10000] [--smoke]

For each Taskrelay config a fresh redis-server (no persistence) is started on a
free port; --tasks no-op tasks are enqueued the way the bridge does and drained
by one in-process batch worker; bytes per task = used_memory after the drain
minus used_memory before the enqueue, divided by --tasks. The same task's
result as Celery's Redis backend stores it (`celery-task-meta-<id>`, written by
the backend's own store_result) is measured the same way. Needs redis-server on
PATH; touches no other Redis. Writes bench/results/memory.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from bench.procs import save_results
from infra.embedded import REDIS_MEMORY_SETTINGS

ROOT = Path(__file__).resolve().parent.parent
TUNED = REDIS_MEMORY_SETTINGS


@contextmanager
def private_redis(config: dict[str, str]) -> Iterator[redis.Redis]:
    """Run a throwaway redis-server with `config`; yield a client of its db 0."""
    from infra.processes import free_port

    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("bench.memory needs redis-server on PATH")
    port, data_dir = free_port(), tempfile.mkdtemp(prefix="taskrelay-bench-memory-")
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", data_dir, "--loglevel", "warning"]
    for name, value in config.items():
        argv += [f"--{name}", value]
    server = subprocess.Popen(argv)
    connection = redis.Redis(port=port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                connection.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        yield connection
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


def _used(connection: redis.Redis) -> int:
    info: Any = connection.info("memory")
    return int(info["used_memory"])


def taskrelay(config: dict[str, str], tasks: int) -> dict:
    from core import registry
    from core.model import TaskRequest
    from core.settings import Settings
    from core.storage import keys
    from core.storage.enqueue import enqueue_batch
    from core.storage.queues import SERIALIZER, worker_queues
    from jobs.batch_worker import BatchWorker
    from jobs.worker import default_name

    with private_redis(config) as connection:
        settings = Settings.from_env({"TASKRELAY_TASK_MODULES": "bench.tasks"})
        registry.load(settings.task_modules)
        before = _used(connection)
        stamp = "2026-01-01T00:00:00+00:00"
        for start in range(0, tasks, 500):
            batch = [
                TaskRequest(str(uuid.uuid4()), "bench_noop", "normal", {}, stamp) for _ in range(start, start + 500)
            ]
            enqueue_batch(connection, settings, batch[: tasks - start])
        worker = BatchWorker(
            worker_queues(connection), connection=connection, serializer=SERIALIZER, name=default_name()
        )
        worker.work(burst=True, logging_level="WARNING")
        worker.connection.delete(worker.key)  # the worker's own record is not per task
        after = _used(connection)
        found: list[bytes] = connection.keys(keys.JOB_PREFIX + "*")  # type: ignore[assignment]
        sample = found[0].decode()
        job_id = sample.removeprefix(keys.JOB_PREFIX)
        sizes = {
            "job hash": connection.memory_usage(sample),
            "result stream": connection.memory_usage(keys.result_key(job_id)),
            "encoding": connection.object("encoding", sample).decode(),
        }
        return {"bytes_per_task": (after - before) / tasks, "one_task": sizes}


def celery(tasks: int) -> dict:
    with private_redis({}) as connection:
        port = connection.connection_pool.connection_kwargs["port"]
        os.environ["BENCH_CELERY_BACKEND"] = f"redis://127.0.0.1:{port}/0"
        from celery import Celery

        app = Celery("bench", backend=os.environ["BENCH_CELERY_BACKEND"])
        app.conf.update(result_serializer="json", accept_content=["json"])
        before = _used(connection)
        for _ in range(tasks):
            app.backend.store_result(str(uuid.uuid4()), None, "SUCCESS")
        after = _used(connection)
        return {"bytes_per_task": (after - before) / tasks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="a few hundred tasks: only proves the harness works")
    args = parser.parse_args()
    tasks = 500 if args.smoke else args.tasks
    rows = {
        "taskrelay, Redis defaults": taskrelay({}, tasks),
        "taskrelay, " + ", ".join(f"{k} {v}" for k, v in TUNED.items()): taskrelay(TUNED, tasks),
        "celery result record": celery(tasks),
    }
    lines = [
        f"Redis memory per finished task ({platform.machine()}, redis-server {_version()}; {tasks:,} no-op tasks,"
        " INFO used_memory delta)",
        "",
        "| config | bytes per finished task | one job hash | one result stream | job hash encoding |",
        "|---|---:|---:|---:|---|",
    ]
    for name, row in rows.items():
        one = row.get("one_task", {})
        lines.append(
            f"| {name} | {row['bytes_per_task']:,.0f} | {one.get('job hash', '')} | {one.get('result stream', '')}"
            f" | {one.get('encoding', '')} |"
        )
    lines.append("")
    name = "memory-smoke" if args.smoke else "memory"
    save_results(name, "\n".join(lines), {"tasks": tasks, "rows": rows})
    print("\n".join(lines))


def _version() -> str:
    executable = shutil.which("redis-server") or "redis-server"
    return (
        subprocess.run([executable, "--version"], capture_output=True, text=True).stdout.split()[2].removeprefix("v=")
    )


if __name__ == "__main__":
    main()
