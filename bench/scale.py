"""Measure the API at scale: status and list latency with N finished tasks in Redis, and the purge time.

    .venv/bin/python -m bench.scale [--tasks 100000] [--redis redis://127.0.0.1:6379/13]

The tasks are written the way RQ's worker leaves a finished job (job hash,
finished registry entry, result stream) in pipelines, so the set-up takes
seconds, not the minutes running them would. Latencies are measured over
HTTP (one keep-alive connection, one request at a time) against the API under
gunicorn, as `make api` runs it, so they include the HTTP round trip. The
chosen database is flushed before and after. Writes bench/results/scale.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from uuid import uuid4

import redis
from rq.job import Job, JobStatus
from rq.results import Result

from bench.ingress import start_api
from bench.procs import BENCH_API_KEY, save_results
from core.connection import connect
from core.model import PRIORITIES, QUEUE_NAMES
from core.storage import keys
from core.storage.enqueue import RUNNER
from core.storage.queues import SERIALIZER, get_queue

TTL_S = 3600
BATCH = 2000


def populate(connection: redis.Redis, count: int) -> list[str]:
    """Write `count` finished data_processing tasks spread over the three queues; return their ids."""
    ids = []
    now = datetime.now(UTC)
    for start in range(0, count, BATCH):
        pipe = connection.pipeline(transaction=False)
        for n in range(start, min(count, start + BATCH)):
            priority = PRIORITIES[n % 3]
            queue = get_queue(connection, priority)
            job = Job.create(
                RUNNER,
                args=("data_processing", {"data": [n]}),
                connection=connection,
                serializer=SERIALIZER,
                id=str(uuid4()),
                description="data_processing",
                origin=QUEUE_NAMES[priority],
                result_ttl=TTL_S,
                meta={"task_type": "data_processing", "priority": priority, "attempts": 1, "errors": []},
            )
            job.set_status(JobStatus.FINISHED, pipeline=pipe)
            job.enqueued_at = job.started_at = job.ended_at = now
            job.save(pipeline=pipe)
            queue.finished_job_registry.add(job, TTL_S, pipeline=pipe)
            Result.create(job, Result.Type.SUCCESSFUL, TTL_S, return_value={"processed": True}, pipeline=pipe)
            ids.append(job.id)
        pipe.execute()
    return ids


def request(client: http.client.HTTPConnection, method: str, url: str) -> tuple[int, bytes]:
    client.request(method, url, headers={"X-API-Key": BENCH_API_KEY})
    response = client.getresponse()
    return response.status, response.read()


def timed(client: http.client.HTTPConnection, url: str, repeats: int) -> tuple[float, float]:
    """Return p50 and p99 latency of GET `url` in milliseconds (after uncounted warm-up calls)."""
    for _ in range(min(50, repeats)):
        request(client, "GET", url)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        status, body = request(client, "GET", url)
        samples.append((time.perf_counter() - started) * 1000)
        assert status == 200, body[:500]
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    """Populate, measure, purge, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="a database it may flush")
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--smoke", action="store_true", help="300 tasks, 5 requests: only proves the harness works")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.repeats = 300, 5

    connection = connect(args.redis)
    connection.flushdb()
    started = time.perf_counter()
    ids = populate(connection, args.tasks)
    print(f"populated {len(ids):,} finished tasks in {time.perf_counter() - started:.1f} s")
    middle = ids[len(ids) // 2]
    del ids
    gc.collect()
    gc.freeze()  # this client's own collector pauses are not the API's latency

    api, port = start_api("app:create_app()", {"REDIS_URL": args.redis})
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        report = measure(client, connection, args, middle)
    finally:
        client.close()
        api.terminate()
        api.wait()
        connection.flushdb()
    name = "scale-smoke" if args.smoke else "scale"
    save_results(name, report["markdown"], report["data"])


def measure(
    client: http.client.HTTPConnection, connection: redis.Redis, args: argparse.Namespace, task_id: str
) -> dict:
    """Time the calls, then the purge; return the report (markdown and data)."""
    rows = [
        ("GET /api/tasks/{id}", f"/api/tasks/{task_id}"),
        ("GET /api/tasks (first page, 50)", "/api/tasks"),
        ("GET /api/tasks?state=SUCCESS&type=completed", "/api/tasks?state=SUCCESS&type=completed"),
        ("GET /api/tasks?priority=low&limit=500", "/api/tasks?priority=low&limit=500"),
        ("GET /api/tasks?task_type=data_processing", "/api/tasks?task_type=data_processing"),
    ]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [
        f"Scale benchmark ({machine}; {args.tasks:,} finished tasks in Redis; over HTTP to gunicorn,"
        " one request at a time)",
        "",
        "| call | requests | p50 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    data: dict = {"machine": machine, "tasks": args.tasks, "calls": {}}
    for label, url in rows:
        repeats = args.repeats if "task_type=" not in url else max(5, args.repeats // 40)
        p50, p99 = timed(client, url, repeats)
        data["calls"][label] = {"url": url, "requests": repeats, "p50_ms": p50, "p99_ms": p99}
        lines.append(f"| {label} | {repeats} | {p50:.2f} | {p99:.2f} |")
        print(lines[-1], flush=True)

    started = time.perf_counter()
    status, body = request(client, "POST", "/api/tasks/purge")
    seconds = time.perf_counter() - started
    assert status == 200, body[:500]
    leftover = sum(1 for _ in connection.scan_iter(keys.JOB_PREFIX + "*", count=10_000))
    data["purge"] = {"seconds": seconds, "answer": json.loads(body), "job_hashes_left": leftover}
    lines += ["", f"purge of all {args.tasks:,}: {seconds:.2f} s over HTTP; job hashes left: {leftover}", ""]
    print("\n".join(lines[-3:]))
    return {"markdown": "\n".join(lines), "data": data}


if __name__ == "__main__":
    main()
