"""Taskrelay side by side with Celery and plain RQ: drain rate from a backlog, Redis commands per task, RSS.

    .venv/bin/python -m bench.compare [--seconds 10] [--rounds 1] [--smoke]

For each workload (a no-op task, a ~1 ms CPU task), interleaved round by round:
  taskrelay  tasks submitted as the API submits them in --ingress-mode (dual, the default: queued in RQ
             and published, marked; rabbitmq: recorded and published, waiting in the RabbitMQ ingress);
             the bridge and 2 workers (WORKER_CLASS=batch) start; timed until every task is finished in RQ
             and the bridge has emptied the ingress
  celery     tasks waiting in RabbitMQ; `celery worker -P prefork -c 2` starts
             (Redis result backend); timed until every result is stored
  celery-c4  the same with `-c 4` (4 processes on the 2 cores)
  rq-fork    tasks enqueued with enqueue_many; 2 stock `rq worker --burst` (forking)
  rq-simple  the same with 2 `rq worker --burst --worker-class rq.SimpleWorker`
The backlog size is calibrated so each config runs about --seconds. Reports
tasks/s, the ratios Taskrelay/Celery (each -c) and Taskrelay/RQ from the same run, Redis
commands per task (INFO commandstats delta, including the enqueue), and the peak
RSS of each process. Flushes Redis databases BENCH_REDIS_DBS (13,14). Writes
bench/results/compare.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench.ingress import BENCH_DBS, RABBITMQ_URL, REDIS_BASE
from bench.procs import child_env, descendants, peak_rss_mb, save_results, stop_all
from core.storage import keys
from core.storage.places import places_of
from core.storage.queues import get_queue

ROOT = Path(__file__).resolve().parent.parent
DB, CELERY_BACKEND_DB = BENCH_DBS[0], BENCH_DBS[1]
WORKLOADS = {
    "noop": ("bench_noop", "bench.noop", "bench.tasks.rq_noop"),
    "cpu": ("bench_cpu", "bench.cpu", "bench.tasks.rq_cpu"),
}
CONCURRENT = False
"""--concurrent: tasks are fed while the workers run, instead of waiting as a backlog."""
INGRESS_MODE = "dual"
"""--ingress-mode: how the feed submits Taskrelay's tasks (app.ingress.build)."""
FIRST_GUESS = {"taskrelay": 4000, "celery": 1200, "celery-c4": 1200, "rq-fork": 25, "rq-simple": 500}
"""Tasks/s guessed before the first measurement, to size the first backlog."""


def _redis(db: int) -> redis.Redis:
    return redis.Redis.from_url(f"{REDIS_BASE}/{db}")


def _commands(connection: redis.Redis) -> int:
    stats: Any = connection.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if not k.startswith(("cmdstat_info", "cmdstat_config")))


def _watch_rss(processes: list[subprocess.Popen], stop: threading.Event, peaks: dict[str, float]) -> None:
    names = {p.pid: " ".join(p.args[-3:]) if isinstance(p.args, list) else str(p.args) for p in processes}
    while not stop.wait(0.2):
        for process in processes:
            pids = [process.pid, *descendants(process.pid)]
            for pid, mb in peak_rss_mb(pids).items():
                label = names[process.pid] + ("" if pid == process.pid else " (child)")
                peaks[label] = max(peaks.get(label, 0.0), mb)


def _run(
    start: Callable[[], list[subprocess.Popen]],
    done: Callable[[], bool],
    timeout_s: float,
    feed: Callable[[], None],
    stop_signal: int = signal.SIGTERM,
) -> tuple[float, dict]:
    """Feed the backlog first (or, with --concurrent, while the workers run), start the processes, time until done()."""
    if not CONCURRENT:
        feed()
    started = time.perf_counter()
    processes = start()
    feeder = threading.Thread(target=feed if CONCURRENT else (lambda: None), daemon=True)
    feeder.start()
    stop = threading.Event()
    peaks: dict[str, float] = {}
    watcher = threading.Thread(target=_watch_rss, args=(processes, stop, peaks), daemon=True)
    watcher.start()
    try:
        while not done():
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError("the backlog was not drained in time")
            time.sleep(0.01)
        return time.perf_counter() - started, peaks
    finally:
        feeder.join()
        stop.set()
        watcher.join()
        stop_all(processes, sig=stop_signal)


def drain_taskrelay(workload: str, count: int) -> dict:
    from app.ingress import build
    from bridge.amqp.topology import Topology, delete_topology
    from core import accepted, registry
    from core.model import TaskRequest
    from core.settings import Settings

    connection = _redis(DB)
    connection.flushdb()
    queue = f"taskrelay.bench.{uuid.uuid4().hex[:8]}"
    task_type = WORKLOADS[workload][0]
    # The feed submits the way the API does once a request is validated, in INGRESS_MODE (concurrent submits
    # sharing a flush): dual, into RQ (marked) and a confirmed publish; rabbitmq, a PENDING record and the publish.
    settings = Settings.from_env(
        {
            "REDIS_URL": f"{REDIS_BASE}/{DB}",
            "RABBITMQ_URL": RABBITMQ_URL,
            "INGRESS_QUEUE": queue,
            "INGRESS_MODE": INGRESS_MODE,
            "TASKRELAY_TASK_MODULES": "bench.tasks",
        }
    )
    registry.load(settings.task_modules)  # a dual feed builds the jobs itself
    ingress = build(connection, settings)
    stamp = "2026-01-01T00:00:00+00:00"

    def publish(offset: int) -> None:
        for n in range(offset, count, 4):
            ingress.submit(TaskRequest(f"bench-{n}", task_type, "normal", {}, stamp))

    def feed() -> None:
        threads = [threading.Thread(target=publish, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ingress.close()

    env = child_env(
        REDIS_URL=f"{REDIS_BASE}/{DB}",
        RABBITMQ_URL=RABBITMQ_URL,
        INGRESS_QUEUE=queue,
        WORKER_CLASS="batch",
        TASKRELAY_TASK_MODULES="bench.tasks",
        KEEP_FINISHED=str(count),  # the drain counts the finished registry: retention must not trim it first
    )
    before = _commands(connection)

    def start() -> list[subprocess.Popen]:
        modules = ["bridge", "jobs.worker", "jobs.worker"]
        return [subprocess.Popen([sys.executable, "-m", m], cwd=ROOT, env=env) for m in modules]

    try:

        def drained() -> bool:  # dual: the bridge's part (taking the marks) is counted too
            finished = connection.zcard(keys.finished_key("normal_priority")) >= count
            return finished and connection.zcard(accepted.IN_REDIS_KEY) == 0

        seconds, peaks = _run(start, drained, 600, feed)
    except RuntimeError as exc:  # say where the rest are
        pipe = connection.pipeline(transaction=False)
        places = places_of(get_queue(connection, "normal"))
        for place in places.values():
            place.size(pipe)
        where = dict(zip(places, pipe.execute(), strict=True))
        raise RuntimeError(f"{exc}: {count} tasks, now {where}") from exc
    finally:
        delete_topology(RABBITMQ_URL, Topology(queue))
    commands = _commands(connection) - before
    connection.flushdb()
    return {"tasks": count, "seconds": seconds, "commands_per_task": commands / count, "peak_rss_mb": peaks}


def drain_celery(workload: str, count: int, concurrency: int = 2) -> dict:
    os.environ["BENCH_CELERY_BACKEND"] = f"{REDIS_BASE}/{CELERY_BACKEND_DB}"
    from bench.celery_app import STOP_SIGNAL, app, delete_queue, worker_argv

    backend = _redis(CELERY_BACKEND_DB)
    backend.flushdb()
    queue = f"bench.celery.{uuid.uuid4().hex[:8]}"
    task = app.tasks[WORKLOADS[workload][1]]

    def feed() -> None:
        with app.producer_or_acquire() as producer:
            for _ in range(count):
                task.apply_async(queue=queue, producer=producer)

    before = _commands(backend)
    env = child_env(BENCH_CELERY_QUEUE=queue, BENCH_CELERY_BACKEND=f"{REDIS_BASE}/{CELERY_BACKEND_DB}")
    argv = worker_argv(queue, concurrency)

    def start() -> list[subprocess.Popen]:
        return [subprocess.Popen(argv, cwd=ROOT, env=env)]

    seconds, peaks = _run(start, lambda: backend.dbsize() >= count, 600, feed, STOP_SIGNAL)
    commands = _commands(backend) - before
    backend.flushdb()
    delete_queue(queue)
    return {"tasks": count, "seconds": seconds, "commands_per_task": commands / count, "peak_rss_mb": peaks}


def drain_rq(workload: str, count: int, simple: bool) -> dict:
    from rq import Queue

    connection = _redis(DB)
    connection.flushdb()
    before = _commands(connection)
    queue = Queue("default", connection=connection)
    func = WORKLOADS[workload][2]

    def feed() -> None:
        for start_at in range(0, count, 100):
            with connection.pipeline() as pipe:
                datas = [Queue.prepare_data(func) for _ in range(start_at, min(count, start_at + 100))]
                queue.enqueue_many(datas, pipeline=pipe)
                pipe.execute()

    rq = str(Path(sys.executable).parent / "rq")
    # Burst workers would quit at the first empty moment while tasks are still being fed.
    argv = [rq, "worker", "--url", f"{REDIS_BASE}/{DB}", "--quiet", *([] if CONCURRENT else ["--burst"])]
    if simple:
        argv += ["--worker-class", "rq.SimpleWorker"]

    def start() -> list[subprocess.Popen]:
        return [subprocess.Popen([*argv, "default"], cwd=ROOT, env=child_env()) for _ in range(2)]

    seconds, peaks = _run(start, lambda: queue.finished_job_registry.get_job_count(cleanup=False) >= count, 900, feed)
    commands = _commands(connection) - before
    connection.flushdb()
    return {"tasks": count, "seconds": seconds, "commands_per_task": commands / count, "peak_rss_mb": peaks}


CONFIGS: dict[str, Callable[[str, int], dict]] = {
    "taskrelay": drain_taskrelay,
    "celery": drain_celery,
    "celery-c4": lambda workload, count: drain_celery(workload, count, concurrency=4),
    "rq-fork": lambda workload, count: drain_rq(workload, count, simple=False),
    "rq-simple": lambda workload, count: drain_rq(workload, count, simple=True),
}


def main() -> None:
    """Run every config for every workload, interleaved; print and save the table and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="aim for this long per config")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny backlogs: only proves the harness works")
    parser.add_argument("--concurrent", action="store_true", help="feed tasks while the workers run")
    parser.add_argument(
        "--ingress-mode", default="dual", choices=("dual", "rabbitmq"), help="how Taskrelay's feed submits"
    )
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset of noop,cpu")
    args = parser.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    global CONCURRENT, INGRESS_MODE
    CONCURRENT = args.concurrent
    INGRESS_MODE = args.ingress_mode
    rates = dict(FIRST_GUESS)
    results: dict[str, dict[str, list[dict]]] = {w: {c: [] for c in CONFIGS} for w in workloads}
    for round_number in range(1, args.rounds + 1):
        for workload in workloads:
            for name, drain in CONFIGS.items():
                count = 20 if args.smoke else max(200, int(rates[name] * args.seconds))
                outcome = drain(workload, count)
                outcome["rate"] = outcome["tasks"] / outcome["seconds"]
                rates[name] = outcome["rate"]
                results[workload][name].append(outcome)
                print(
                    f"round {round_number} {workload:5} {name:10} {outcome['rate']:8.0f} tasks/s"
                    f"  ({outcome['tasks']} in {outcome['seconds']:.1f} s,"
                    f" {outcome['commands_per_task']:.1f} Redis commands/task)",
                    flush=True,
                )
    report = _report(results, args)
    name = "compare" + ("-concurrent" if args.concurrent else "") + ("-smoke" if args.smoke else "")
    save_results(name, report["markdown"], report["data"])
    print(report["markdown"])


def _report(results: dict[str, dict[str, list[dict]]], args: argparse.Namespace) -> dict:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"Drain {'under concurrent submission' if args.concurrent else 'from a backlog'} ({machine};"
        f" 2 worker processes each; {args.rounds} round(s), about"
        f" {args.seconds:g} s per config, interleaved; Taskrelay fed with INGRESS_MODE={args.ingress_mode})",
        "",
        "| workload | config | tasks/s | Redis commands/task | peak RSS per process (MB) |",
        "|---|---|---:|---:|---|",
    ]
    data: dict[str, Any] = {"machine": machine, "ingress_mode": args.ingress_mode, "workloads": {}}
    for workload, configs in results.items():
        best = {}
        for name, runs in configs.items():
            rate = sum(r["tasks"] for r in runs) / sum(r["seconds"] for r in runs)
            commands = sum(r["commands_per_task"] for r in runs) / len(runs)
            rss: dict[str, float] = {}
            for run in runs:
                for label, mb in run["peak_rss_mb"].items():
                    rss[label] = max(rss.get(label, 0.0), mb)
            rss_text = ", ".join(f"{label.split()[-1]} {mb:.0f}" for label, mb in sorted(rss.items()))
            lines.append(f"| {workload} | {name} | {rate:.0f} | {commands:.1f} | {rss_text} |")
            best[name] = {"rate": rate, "commands_per_task": commands, "peak_rss_mb": rss}
        ratio_celery = best["taskrelay"]["rate"] / best["celery"]["rate"]
        ratio_c4 = best["taskrelay"]["rate"] / best["celery-c4"]["rate"]
        ratio_fork = best["taskrelay"]["rate"] / best["rq-fork"]["rate"]
        ratio_simple = best["taskrelay"]["rate"] / best["rq-simple"]["rate"]
        lines.append(
            f"| {workload} | **ratios** | Taskrelay/Celery {ratio_celery:.2f}x, /Celery -c4 {ratio_c4:.2f}x,"
            f" /RQ fork {ratio_fork:.2f}x,"
            f" /RQ simple {ratio_simple:.2f}x | | |"
        )
        data["workloads"][workload] = {
            "configs": best,
            "ratios": {"celery": ratio_celery, "celery_c4": ratio_c4, "rq_fork": ratio_fork, "rq_simple": ratio_simple},
        }
    lines.append("")
    return {"markdown": "\n".join(lines), "data": data}


if __name__ == "__main__":
    main()
