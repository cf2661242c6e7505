"""Benchmark the ingress: HTTP submit rate through RabbitMQ (with confirms) and the bridge's throughput.

    .venv/bin/python -m bench.ingress [--seconds 10] [--rounds 2] [--smoke]

Side by side in one run, interleaved round by round, against gunicorn
(--api-workers processes x --api-threads threads, default 2 x 8 as `make api`) with 8 keep-alive clients:
  bare    a bare Flask app (the ceiling of Flask + gunicorn here)
  celery  the seed's stack: Flask calling task.delay() (RabbitMQ broker, publisher confirms off, Celery's default)
  pika    the issue's calibration point: Flask publishing with plain pika, one connection per process,
          a confirm per message (bench/pika_flask.py)
  direct  Taskrelay, API enqueuing straight into RQ
  limited direct with a per-key rate limit set (RATE_LIMIT, never reached): what counting costs
  rabbit  Taskrelay, INGRESS_MODE=rabbitmq: API publishing to RabbitMQ with publisher confirms
  dual    Taskrelay, INGRESS_MODE=dual (the default): API enqueuing into RQ and publishing with confirms
Load comes from wrk when it is installed (apt-get install wrk), else from
bench/load.py (Python asyncio, which itself takes CPU from the server).
Then the bridge (`python -m bridge`) drains everything the rabbit runs
published into RQ, timed from start to the last job in Redis.
Needs the real Redis and RabbitMQ on 127.0.0.1; flushes Redis databases
BENCH_REDIS_DBS (13,14). Writes bench/results/ingress.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import redis

from bench.load import LoadResult, load
from bench.procs import BENCH_API_KEY, descendants, peak_rss_mb, save_results
from core.storage import keys
from infra.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"task_type": "data_processing", "priority": "high", "parameters": {"data": "example data"}}).encode()
RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
REDIS_BASE = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
BENCH_DBS = [int(db) for db in os.environ.get("BENCH_REDIS_DBS", "13,14").split(",")]
"""The two Redis databases the benchmarks may flush and fill (BENCH_REDIS_DBS=13,14)."""


API_WORKERS, API_THREADS = 2, 8
"""gunicorn's shape for every benchmark, as `make api` runs it on this 2-core machine."""


def start_api(
    app_spec: str, env: dict[str, str], workers: int = API_WORKERS, threads: int = API_THREADS
) -> tuple[subprocess.Popen, int]:
    """Start gunicorn serving `app_spec`; return it and its port once it answers."""
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]
    argv += ["--threads", str(threads), "--log-level", "warning", app_spec]
    env = {**os.environ, "TASKRELAY_BOOTSTRAP_KEY": BENCH_API_KEY, **env, "LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(argv, cwd=ROOT, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing", timeout=1)
        except urllib.error.HTTPError:
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{app_spec} did not start")


def main() -> None:
    """Run the interleaved HTTP configs, then the bridge drain; print and save the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--api-workers", type=int, default=API_WORKERS, help="gunicorn processes (the Makefile's API_WORKERS)"
    )
    parser.add_argument(
        "--api-threads", type=int, default=API_THREADS, help="threads per process (the Makefile's API_THREADS)"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny run that only proves the harness works")
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds = 0.5, 1

    queue = f"taskrelay.bench.{uuid.uuid4().hex[:8]}"
    dual_queue = f"taskrelay.bench.dual.{uuid.uuid4().hex[:8]}"
    direct_db, rabbit_db = f"{REDIS_BASE}/{BENCH_DBS[0]}", f"{REDIS_BASE}/{BENCH_DBS[1]}"
    for url in (direct_db, rabbit_db):
        redis.Redis.from_url(url).flushdb()
    celery_queue = f"bench.celery.{uuid.uuid4().hex[:8]}"
    celery_env = {"BENCH_CELERY_QUEUE": celery_queue, "BENCH_CELERY_BACKEND": direct_db}
    pika_queue = f"bench.pika.{uuid.uuid4().hex[:8]}"
    configs = {
        "bare": ("bench.bare_app:app", {}),
        "celery": ("bench.celery_flask:app", celery_env),
        "pika": ("bench.pika_flask:app", {"BENCH_PIKA_QUEUE": pika_queue, "RABBITMQ_URL": RABBITMQ_URL}),
        "direct": ("app:create_app()", {"REDIS_URL": direct_db}),
        "limited": ("app:create_app()", {"REDIS_URL": direct_db, "RATE_LIMIT": "1000000/second"}),
        "rabbit": (
            "app:create_app()",
            {"REDIS_URL": rabbit_db, "RABBITMQ_URL": RABBITMQ_URL, "INGRESS_QUEUE": queue, "INGRESS_MODE": "rabbitmq"},
        ),
        "dual": (
            "app:create_app()",
            {"REDIS_URL": direct_db, "RABBITMQ_URL": RABBITMQ_URL, "INGRESS_QUEUE": dual_queue, "INGRESS_MODE": "dual"},
        ),
    }
    results: dict[str, list[LoadResult]] = {name: [] for name in configs}
    rss: dict[str, dict[str, float]] = {name: {"master": 0.0, "worker": 0.0} for name in configs}
    for round_number in range(1, args.rounds + 1):
        for name, (spec, env) in configs.items():
            process, port = start_api(spec, env, args.api_workers, args.api_threads)
            try:
                load("127.0.0.1", port, "/api/tasks", BODY, min(1.0, args.seconds))  # warm-up, not counted
                result = load("127.0.0.1", port, "/api/tasks", BODY, args.seconds)
                _note_rss(rss[name], process.pid)
            finally:
                process.terminate()
                process.wait()
            results[name].append(result)
            print(f"round {round_number} {name:7} {result.describe()}", flush=True)

    published = _queue_depth(queue)
    drain_s = _drain_with_bridge(rabbit_db, queue, published)
    report = _report(results, rss, published, drain_s, args)
    name = "ingress-smoke" if args.smoke else "ingress"
    save_results(name, report["markdown"], report["data"])
    print(report["markdown"])
    redis.Redis.from_url(direct_db).flushdb()
    redis.Redis.from_url(rabbit_db).flushdb()
    _delete_queue(queue)
    _delete_queue(dual_queue)  # no bridge ran for it: its messages are still there
    from bench.celery_app import delete_queue as delete_celery_queue  # the baselines' clients load only here
    from bench.pika_flask import delete_queue as delete_pika_queue

    delete_celery_queue(celery_queue)
    delete_pika_queue(RABBITMQ_URL, pika_queue)


def _queue_depth(queue: str) -> int:
    from bridge.amqp.consumer import Consumer
    from bridge.amqp.topology import Topology

    consumer = Consumer(RABBITMQ_URL, Topology(queue), prefetch=1)
    consumer.connect()
    try:
        return consumer.depth()
    finally:
        consumer.close()


def _delete_queue(queue: str) -> None:
    from bridge.amqp.topology import Topology, delete_topology

    delete_topology(RABBITMQ_URL, Topology(queue))


def _drain_with_bridge(redis_url: str, queue: str, expected: int) -> float:
    connection = redis.Redis.from_url(redis_url)
    env = {**os.environ, "REDIS_URL": redis_url, "RABBITMQ_URL": RABBITMQ_URL, "INGRESS_QUEUE": queue}
    env["LOG_LEVEL"] = "WARNING"
    bridge = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=ROOT, env=env)
    try:
        deadline = time.perf_counter() + 600
        while connection.llen(keys.queue_key("high_priority")) == 0 and time.perf_counter() < deadline:
            time.sleep(0.002)
        started = time.perf_counter()  # from the first job in Redis: process start-up is not the bridge's rate
        while connection.llen(keys.queue_key("high_priority")) < expected:
            time.sleep(0.01)
            if time.perf_counter() > deadline:
                raise RuntimeError("the bridge did not drain the queue within 10 minutes")
        return time.perf_counter() - started
    finally:
        bridge.terminate()
        bridge.wait()


def _note_rss(peaks: dict[str, float], master: int) -> None:
    """Keep the peak RSS (MB) of the gunicorn master and of its largest worker."""
    workers = peak_rss_mb(descendants(master))
    peaks["master"] = max(peaks["master"], peak_rss_mb([master]).get(master, 0.0))
    peaks["worker"] = max(peaks["worker"], max(workers.values(), default=0.0))


def _report(
    results: dict[str, list[LoadResult]],
    rss: dict[str, dict[str, float]],
    published: int,
    drain_s: float,
    args: argparse.Namespace,
) -> dict:
    def merged(name: str) -> LoadResult:
        runs = results[name]
        result = LoadResult(
            sum(r.requests for r in runs),
            sum(r.errors for r in runs),
            sum(r.seconds for r in runs),
            [ms for r in runs for ms in r.latencies_ms],
        )
        if runs[0].fixed_percentiles is not None:  # wrk: the worst round's percentiles
            result.fixed_percentiles = (
                max(r.percentile(0.5) for r in runs),
                max(r.percentile(0.99) for r in runs),
            )
        return result

    rows = {name: merged(name) for name in results}
    bridge_rate = published / drain_s if drain_s else 0.0
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"Ingress benchmark ({machine}; gunicorn {args.api_workers} workers x {args.api_threads} threads;"
        " 8 keep-alive clients;"
        f" {args.rounds} x {args.seconds:g} s per config, interleaved)",
        "",
        "| config | POST /api/tasks req/s | p50 ms | p99 ms | errors | peak RSS MB: master, each worker |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row.rate:.0f} | {row.percentile(0.5):.2f} | {row.percentile(0.99):.2f} | {row.errors}"
            f" | {rss[name]['master']:.0f}, {rss[name]['worker']:.0f} |"
        )
    lines += [
        "",
        f"rabbit / celery: {rows['rabbit'].rate / rows['celery'].rate:.2f}x;"
        f" rabbit / pika: {rows['rabbit'].rate / rows['pika'].rate:.2f}x;"
        f" rabbit / bare: {rows['rabbit'].rate / rows['bare'].rate:.2f}x;"
        f" rabbit / direct: {rows['rabbit'].rate / rows['direct'].rate:.2f}x;"
        f" limited / direct (rate limit's cost): {rows['limited'].rate / rows['direct'].rate:.2f}x;"
        f" dual / celery: {rows['dual'].rate / rows['celery'].rate:.2f}x;"
        f" dual / rabbit: {rows['dual'].rate / rows['rabbit'].rate:.2f}x",
        f"bridge: {published} tasks from RabbitMQ into RQ in {drain_s:.2f} s = {bridge_rate:.0f} tasks/s"
        " (timed from its first job in Redis)",
        "",
    ]
    data = {
        "machine": machine,
        "http": {
            name: {
                "rate": row.rate,
                "p50_ms": row.percentile(0.5),
                "p99_ms": row.percentile(0.99),
                "errors": row.errors,
                "peak_rss_mb": rss[name],
            }
            for name, row in rows.items()
        },
        "bridge": {"tasks": published, "seconds": drain_s, "rate": bridge_rate},
    }
    return {"markdown": "\n".join(lines), "data": data}


if __name__ == "__main__":
    main()
