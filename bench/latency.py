"""Submit→done latency at a steady rate: Taskrelay vs Celery, both submitted over HTTP.

Taskrelay (the default, INGRESS_MODE=dual): HTTP → RQ → batch workers, every task also published to RabbitMQ
(confirmed before the 202) and the bridge taking the API's marks; "rabbitmq" (INGRESS_MODE=rabbitmq): HTTP →
RabbitMQ → bridge → batch workers; "direct" (no RABBITMQ_URL): HTTP → RQ → batch workers; "redis-first"
(INGRESS_MODE=redis-first): HTTP → RQ → batch workers, with RabbitMQ and a bridge for Redis outages.
Celery: HTTP → Flask → RabbitMQ → prefork workers.

    .venv/bin/python -m bench.latency [--rate 200] [--seconds 10] [--smoke]

Each system gets the same no-op task POSTed over HTTP at a fixed rate by 4
paced client threads, once 8 warm-up tasks (not counted) have run through it.
Latency is the task's recorded end time (RQ's `ended_at`, Celery's
`date_done`) minus the moment the client sent the request; both clocks are
this machine's. Prints p50, p90, p99 and max per system.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import redis

from bench.ingress import BENCH_DBS, RABBITMQ_URL, REDIS_BASE, ROOT, start_api
from bench.procs import BENCH_API_KEY, save_results, stop_all, wait_for
from core.storage import keys

BODY = json.dumps({"task_type": "bench_noop", "priority": "normal", "parameters": {}})


def paced_submit(port: int, rate: float, seconds: float, clients: int = 4) -> dict[str, float]:
    """POST at `rate` per second for `seconds`; return task id -> submit time (Unix seconds)."""
    sent: dict[str, float] = {}
    lock = threading.Lock()

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        interval = clients / rate
        start = time.monotonic() + offset / rate
        n = 0
        while (due := start + n * interval) < start + seconds:
            time.sleep(max(0.0, due - time.monotonic()))
            submitted = time.time()
            connection.request(
                "POST", "/api/tasks", BODY, {"Content-Type": "application/json", "X-API-Key": BENCH_API_KEY}
            )
            answer = connection.getresponse()
            task_id = json.loads(answer.read())["task_id"]
            with lock:
                sent[task_id] = submitted
            n += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sent


WARM_UP_TASKS = 8
"""Tasks each system runs before the measured ones, so both start measuring with every process up and
its connections open (instead of a fixed sleep); they are not counted."""


def warm_up(port: int, finished: Callable[[], int], ready: Callable[[], bool] = lambda: True) -> int:
    """POST the warm-up tasks and wait until they are done and `ready()` holds; return how many."""
    warm = paced_submit(port, rate=100.0, seconds=WARM_UP_TASKS / 100.0)
    wait_for(lambda: finished() >= len(warm) and ready(), 60, "the warm-up tasks", 0.02)
    return len(warm)


def _percentiles(latencies_ms: list[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]

    return {"n": len(ordered), "p50": statistics.median(ordered), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1]}


def taskrelay(rate: float, seconds: float, rabbitmq: bool = True, mode: str = "dual") -> dict[str, Any]:
    """With RabbitMQ and the bridge in INGRESS_MODE `mode` (dual: the API enqueues and publishes; rabbitmq: the
    bridge enqueues; redis-first: the API enqueues, publishes only for outages), or (`rabbitmq` False) direct."""
    url = f"{REDIS_BASE}/{BENCH_DBS[0]}"
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    queue = f"taskrelay.latency.{uuid.uuid4().hex[:8]}"
    env = {
        "REDIS_URL": url,
        "RABBITMQ_URL": RABBITMQ_URL if rabbitmq else "",
        "INGRESS_MODE": mode if rabbitmq else "",
        "INGRESS_QUEUE": queue,
        "TASKRELAY_TASK_MODULES": "bench.tasks",
    }
    api, port = start_api("app:create_app()", env)
    child_env = {**os.environ, **env, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    others = [
        subprocess.Popen([sys.executable, "-m", m], cwd=ROOT, env=child_env)
        for m in (("bridge",) if rabbitmq else ()) + ("jobs.worker", "jobs.worker")
    ]
    try:

        def finished() -> int:
            return int(connection.zcard(keys.finished_key("normal_priority")))

        warm = warm_up(port, finished, lambda: int(connection.scard(keys.WORKERS_KEY)) >= 2)
        sent = paced_submit(port, rate, seconds)
        wait_for(lambda: finished() >= warm + len(sent), 120, "tasks", 0.1)
        pipe = connection.pipeline(transaction=False)
        for task_id in sent:
            pipe.hmget(keys.job_key(task_id), "created_at", "enqueued_at", "started_at", "ended_at")
        stamps = pipe.execute()
    finally:
        stop_all([api, *others])
        from bridge.amqp.topology import Topology, delete_topology

        delete_topology(RABBITMQ_URL, Topology(queue))
    connection.flushdb()
    # Each task's way, as the times the API, the bridge and the worker wrote (one clock: this machine's).
    legs: dict[str, list[float]] = {leg: [] for leg in LEGS}
    for task_id, times in zip(sent, stamps, strict=True):
        at = [sent[task_id], *map(_stamp, times)]  # created_at is when the API accepted it
        for leg, begin, end in zip(LEGS, at, at[1:], strict=False):
            legs[leg].append((end - begin) * 1000)
        legs["total"].append((at[-1] - at[0]) * 1000)
    return {
        **_percentiles(legs["total"]),
        "legs": {leg: statistics.median(ms) for leg, ms in legs.items()},
        "legs p90": {leg: _percentiles(ms)["p90"] for leg, ms in legs.items()},
    }


LEGS = ("client→API", "API→RQ queue", "queue→start", "run", "total")
"""Taskrelay's submit→done split at the times recorded on the way (the last is the whole): the API accepted it
(`created_at`), the bridge, or the API itself when direct, queued it (`enqueued_at`), a worker started it."""


def _stamp(raw: bytes) -> float:
    return datetime.fromisoformat(raw.decode().replace("Z", "+00:00")).timestamp()


def celery(rate: float, seconds: float) -> dict[str, float]:
    backend_url = f"{REDIS_BASE}/{BENCH_DBS[1]}"
    backend = redis.Redis.from_url(backend_url)
    backend.flushdb()
    queue = f"bench.celery.{uuid.uuid4().hex[:8]}"
    env = {"BENCH_CELERY_QUEUE": queue, "BENCH_CELERY_BACKEND": backend_url}
    api, port = start_api("bench.celery_flask:app", env)
    child_env = {**os.environ, **env, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    from bench.celery_app import STOP_SIGNAL, delete_queue, worker_argv

    argv = worker_argv(queue)
    worker = subprocess.Popen(argv, cwd=ROOT, env=child_env)
    try:
        warm = warm_up(port, lambda: int(backend.dbsize()))
        sent = paced_submit(port, rate, seconds)
        wait_for(lambda: backend.dbsize() >= warm + len(sent), 120, "tasks", 0.1)
        pipe = backend.pipeline(transaction=False)
        for task_id in sent:
            pipe.get(f"celery-task-meta-{task_id}")
        done = [json.loads(raw)["date_done"] for raw in pipe.execute()]
    finally:
        stop_all([worker], sig=STOP_SIGNAL)
        stop_all([api])
        delete_queue(queue)
    latencies = [
        (datetime.fromisoformat(d if "+" in d else d + "+00:00").timestamp() - sent[t]) * 1000
        for t, d in zip(sent, done, strict=True)
    ]
    backend.flushdb()
    return _percentiles(latencies)


def main() -> None:
    """Measure both systems at the same steady rate and print their latency percentiles."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="tasks per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.seconds = 20.0, 1.0
    lines = [
        f"submit→done latency at {args.rate:g} tasks/s for {args.seconds:g} s (no-op task, HTTP submit)",
        "",
        "| system | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    data: dict = {"rate": args.rate, "seconds": args.seconds}
    systems: dict[str, Callable[[float, float], dict[str, Any]]] = {
        "taskrelay": taskrelay,
        "taskrelay rabbitmq": partial(taskrelay, mode="rabbitmq"),
        "taskrelay direct": partial(taskrelay, rabbitmq=False),
        "taskrelay redis-first": partial(taskrelay, mode="redis-first"),
        "celery": celery,
    }
    for name, measure in systems.items():
        row = data[name] = measure(args.rate, args.seconds)
        lines.append(
            f"| {name} | {row['n']} | {row['p50']:.1f} | {row['p90']:.1f} | {row['p99']:.1f} | {row['max']:.1f} |"
        )
        print(lines[-1], flush=True)
    lines += ["", "Taskrelay's p50 / p90 per leg, ms (from `created_at`, `enqueued_at`, `started_at`, `ended_at`):"]
    for name in ("taskrelay", "taskrelay rabbitmq", "taskrelay direct", "taskrelay redis-first"):
        legs = data[f"{name} p50 legs ms"] = data[name].pop("legs")
        tails = data[f"{name} p90 legs ms"] = data[name].pop("legs p90")
        lines.append(f"- {name}: " + ", ".join(f"{leg} {ms:.2f} / {tails[leg]:.2f}" for leg, ms in legs.items()))
    print("\n".join(lines[-5:]), flush=True)
    name = "latency-smoke" if args.smoke else "latency"
    save_results(name, "\n".join(lines) + "\n", data)


if __name__ == "__main__":
    main()
