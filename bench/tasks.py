"""The benchmark workloads, as a Taskrelay task type, a plain RQ function and (bench/celery_app.py) a Celery task."""

from __future__ import annotations

import os
import time
from typing import Any

import redis

from core.registry import task

STARTED_KEY = "bench:started"
"""Redis hash where bench.priority's sleeping tasks record when they started: {task name: Unix time}."""
CPU_LOOPS = 13_000
"""Iterations of the CPU workload: about 1 ms of pure Python on the build machine."""


def burn(loops: int = CPU_LOOPS) -> int:
    """Spend CPU: the same loop in every system."""
    total = 0
    for i in range(loops):
        total += i * i
    return total


def rq_noop() -> None:
    """Plain RQ: do nothing."""


def rq_cpu() -> int:
    """Plain RQ: about 1 ms of CPU."""
    return burn()


@task("bench_noop", max_retries=0, timeout_s=60)
def noop(params: dict[str, Any]) -> None:
    """Taskrelay: do nothing."""


@task("bench_cpu", max_retries=0, timeout_s=60)
def cpu(params: dict[str, Any]) -> int:
    """Taskrelay: about 1 ms of CPU."""
    return burn()


def sleep_and_mark(connection: redis.Redis, name: str, seconds: float) -> None:
    """Record in STARTED_KEY that `name` started now, then sleep: the same in every system."""
    connection.hset(STARTED_KEY, name, repr(time.time()))
    time.sleep(seconds)


@task("bench_sleep", max_retries=0, timeout_s=60)
def sleep(params: dict[str, Any]) -> None:
    """Taskrelay: mark the start (`id`), then sleep `s` seconds."""
    from rq import get_current_job

    job = get_current_job()
    assert job is not None
    sleep_and_mark(job.connection, params["id"], float(params["s"]))


@task("bench_add1", max_retries=0, timeout_s=60)
def add1(params: dict[str, Any]) -> int:
    """Taskrelay: return x + 1 (bench.workflows chains these)."""
    return int(params["x"]) + 1


@task("bench_range", max_retries=0, timeout_s=60)
def numbers(params: dict[str, Any]) -> list[int]:
    """Taskrelay: return [0, 1, ..., n - 1] (bench.workflows maps over it)."""
    return list(range(int(params["n"])))


@task("bench_total", max_retries=0, timeout_s=60)
def total(params: dict[str, Any]) -> int:
    """Taskrelay: return the sum of `values` (bench.workflows' fan-in)."""
    return sum(params["values"])


CHAOS_RUNS_KEY = "chaos:runs"
"""Hash in the observer Redis (CHAOS_OBSERVER_URL): task id -> how many times bench.chaos's task started."""
_observer: redis.Redis | None = None


@task("bench_chaos", max_retries=5, timeout_s=60)
def chaos(params: dict[str, Any]) -> dict[str, Any]:
    """Taskrelay: count this run in the observer Redis (a server the chaos run never kills), then sleep `sleep_ms`."""
    from rq import get_current_job

    global _observer
    if _observer is None:
        _observer = redis.Redis.from_url(os.environ["CHAOS_OBSERVER_URL"])
    job = get_current_job()
    runs = _observer.hincrby(CHAOS_RUNS_KEY, job.id if job else "?", 1)
    time.sleep(float(params.get("sleep_ms", 0)) / 1000)
    return {"run": runs, "n": params.get("n")}
