"""The benchmark workloads, as a Taskrelay task type, a plain RQ function and (bench/celery_app.py) a Celery task."""

from __future__ import annotations

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
