"""Task types that exist only for tests; workers load them with TASKRELAY_TASK_MODULES=tests.fixture_tasks."""

from __future__ import annotations

import time
from typing import Any

from rq import get_current_job

from core.errors import TaskInputError
from core.registry import task
from jobs.runner import report_progress


@task("test_flaky", max_retries=3, timeout_s=30)
def flaky(params: dict[str, Any]) -> dict[str, Any]:
    """Fail until attempt `succeed_on`, then return which attempt succeeded."""
    job = get_current_job()
    attempt = job.meta["attempts"] if job else 1
    if attempt < int(params.get("succeed_on", 2)):
        raise RuntimeError(f"planned failure on attempt {attempt}")
    return {"succeeded_on": attempt}


@task("test_bad_input", max_retries=5, timeout_s=30)
def bad_input(params: dict[str, Any]) -> None:
    """Fail with an error retrying cannot fix."""
    raise TaskInputError("value must be positive")


@task("test_hold", max_retries=0, timeout_s=60)
def hold(params: dict[str, Any]) -> dict[str, Any]:
    """Report progress, then wait until the Redis key `release_key` exists (at most `max_s` seconds)."""
    job = get_current_job()
    assert job is not None
    report_progress(1, 2, "holding")
    deadline = time.monotonic() + float(params.get("max_s", 30))
    while time.monotonic() < deadline:
        if job.connection.exists(params["release_key"]):
            return {"released": True}
        time.sleep(0.02)
    return {"released": False}


@task("test_count", max_retries=0, timeout_s=30)
def count(params: dict[str, Any]) -> dict[str, Any]:
    """Count this run in Redis (`runs:total`, `runs:<task_id>`), then sleep `sleep_s`; report its key's TTL."""
    job = get_current_job()
    assert job is not None
    pipe = job.connection.pipeline()
    pipe.incr("runs:total")
    pipe.incr(f"runs:{job.id}")
    pipe.ttl(job.key)
    _, run, key_ttl = pipe.execute()
    time.sleep(float(params.get("sleep_s", 0)))
    return {"run": run, "key_ttl": key_ttl}


@task("test_echo", max_retries=0, timeout_s=30)
def echo(params: dict[str, Any]) -> dict[str, Any]:
    """Return the parameters it was given (workflow tests read what a reference resolved to)."""
    return {"echo": params}


@task("test_sum", max_retries=0, timeout_s=30)
def total(params: dict[str, Any]) -> dict[str, Any]:
    """Add up `values` (a list of numbers, or of lists of numbers: the results of several steps)."""
    flat = [v for item in params["values"] for v in (item if isinstance(item, list) else [item])]
    return {"sum": sum(flat), "count": len(flat)}


@task("test_fail_if", max_retries=0, timeout_s=30)
def fail_if(params: dict[str, Any]) -> dict[str, Any]:
    """Fail (bad input) when `fail` is true, else return `value`: map tests choose which elements fail."""
    if params.get("fail"):
        raise TaskInputError(f"element {params.get('value')!r} was told to fail")
    return {"value": params.get("value")}


@task("test_slow", max_retries=1, timeout_s=1)
def slow(params: dict[str, Any]) -> dict[str, Any]:
    """Sleep `sleep_s` seconds: past the 1 s timeout, its worker must stop it (timeout tests)."""
    time.sleep(float(params.get("sleep_s", 0)))
    return {"slept": params.get("sleep_s", 0)}


@task("test_attempt_seen", max_retries=0, timeout_s=30)
def attempt_seen(params: dict[str, Any]) -> dict[str, Any]:
    """Return this attempt's number as the task sees it and as Redis holds it while the task runs."""
    import json

    job = get_current_job()
    assert job is not None
    stored = json.loads(job.connection.hget(job.key, "meta") or b"{}")
    return {"attempt": job.meta["attempts"], "stored": stored.get("attempts")}
