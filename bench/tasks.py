"""The benchmark workloads, as a Taskrelay task type, a plain RQ function and (bench/celery_app.py) a Celery task."""

from __future__ import annotations

from typing import Any

from core.registry import task

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
