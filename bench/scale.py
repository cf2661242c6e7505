"""Measure the API at scale: status and list latency with N finished tasks in Redis, and the purge time.

    .venv/bin/python -m bench.scale [--tasks 100000] [--redis redis://127.0.0.1:6379/13]

The tasks are written the way RQ's worker leaves a finished job (job hash,
finished registry entry, result stream) in pipelines, so the set-up takes
seconds, not the minutes running them would. Latencies are measured through
the Flask app in-process (no HTTP socket), so they are the server-side cost.
The chosen database is flushed before and after.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import UTC, datetime
from uuid import uuid4

import redis
from rq.job import Job, JobStatus
from rq.results import Result

from app import create_app
from jobs.queues import PRIORITIES, QUEUE_NAMES, RUNNER, SERIALIZER, connect, get_queue
from jobs.settings import Settings

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
            job._status = JobStatus.FINISHED
            job.enqueued_at = job.started_at = job.ended_at = now
            job.save(pipeline=pipe)
            queue.finished_job_registry.add(job, TTL_S, pipeline=pipe)
            Result.create(job, Result.Type.SUCCESSFUL, TTL_S, return_value={"processed": True}, pipeline=pipe)
            ids.append(job.id)
        pipe.execute()
    return ids


def timed(client, url: str, repeats: int) -> tuple[float, float]:
    """Return p50 and p99 latency of GET `url` in milliseconds (after 5 uncounted warm-up calls)."""
    for _ in range(5):
        client.get(url)
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.json
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


def main() -> None:
    """Populate, measure, purge, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13", help="a database it may flush")
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    connection = connect(args.redis)
    connection.flushdb()
    started = time.perf_counter()
    ids = populate(connection, args.tasks)
    print(f"populated {len(ids):,} finished tasks in {time.perf_counter() - started:.1f} s")

    client = create_app(Settings.from_env({"REDIS_URL": args.redis, "LOG_LEVEL": "WARNING"}), connection).test_client()
    rows = [
        ("GET /api/tasks/{id}", f"/api/tasks/{ids[len(ids) // 2]}"),
        ("GET /api/tasks (first page, 50)", "/api/tasks"),
        ("GET /api/tasks?state=SUCCESS&type=completed", "/api/tasks?state=SUCCESS&type=completed"),
        ("GET /api/tasks?priority=low&limit=500", "/api/tasks?priority=low&limit=500"),
        ("GET /api/tasks?task_type=data_processing", "/api/tasks?task_type=data_processing"),
    ]
    print(f"| call ({args.tasks:,} tasks in Redis) | p50 ms | p99 ms |")
    print("|---|---:|---:|")
    for label, url in rows:
        repeats = args.repeats if "task_type=" not in url else max(5, args.repeats // 40)
        p50, p99 = timed(client, url, repeats)
        print(f"| {label} | {p50:.2f} | {p99:.2f} |")

    started = time.perf_counter()
    answer = client.post("/api/tasks/purge").json or {}
    print(f"purge: {time.perf_counter() - started:.2f} s, {answer['details']}")
    leftover = sum(1 for _ in connection.scan_iter("rq:job:*", count=10_000))
    print(f"job hashes left after purge: {leftover}")
    connection.flushdb()


if __name__ == "__main__":
    main()
