"""Workflows side by side with Celery canvas: a chain passing results, a fan-out with fan-in, many small DAGs.

    .venv/bin/python -m bench.workflows [--smoke]

Each system runs 2 worker processes (Taskrelay: WORKER_CLASS=batch; Celery:
prefork -c 2, RabbitMQ broker, Redis result backend). Scenarios, timed from
submit until the last step's result is stored:
  chain    100 steps, each adding 1 to the previous step's result
           (Taskrelay: {"$from": previous}; Celery: chain(add1.s(0), add1.s(), ...))
  fan-in   1,000 parallel steps, then one step summing their results
           (Celery: chord(group(...), total.s()))
  map      one step returning a list of 1,000 numbers, a map step adding 1 to each, one summing them
           (Celery has no map over a result: the same chord, its size known at submit)
  many     200 workflows of 10 steps (a chain of 10) submitted at once: steps/s
Taskrelay workflows are submitted through the API's own function (no HTTP),
as Celery's are through apply_async. Also reported: the time to accept one
1,000-step workflow (check and create). Flushes Redis databases 13 and 14.
Writes bench/results/workflows.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.ingress import BENCH_DBS, RABBITMQ_URL, REDIS_BASE
from bench.procs import child_env, save_results, stop_all, wait_for
from core.storage import keys

ROOT = Path(__file__).resolve().parent.parent
DB, CELERY_BACKEND_DB = BENCH_DBS[0], BENCH_DBS[1]


def _chain(n: int) -> list[dict[str, Any]]:
    steps = [{"id": "s0", "task_type": "bench_add1", "parameters": {"x": 0}}]
    for i in range(1, n):
        ref = {"$from": f"s{i - 1}", "path": ""}
        steps.append({"id": f"s{i}", "task_type": "bench_add1", "parameters": {"x": ref}, "depends_on": [f"s{i - 1}"]})
    return steps


def _fan_in(n: int) -> list[dict[str, Any]]:
    parts = [{"id": f"p{i}", "task_type": "bench_add1", "parameters": {"x": i}} for i in range(n)]
    total = {
        "id": "total",
        "task_type": "bench_total",
        "parameters": {"values": [{"$from": f"p{i}", "path": ""} for i in range(n)]},
        "depends_on": [f"p{i}" for i in range(n)],
    }
    return [*parts, total]


def _map(n: int) -> list[dict[str, Any]]:
    return [
        {"id": "numbers", "task_type": "bench_range", "parameters": {"n": n}},
        {
            "id": "each",
            "task_type": "bench_add1",
            "parameters": {"x": {"$item": ""}},
            "depends_on": ["numbers"],
            "map": {"$from": "numbers"},
        },
        {
            "id": "total",
            "task_type": "bench_total",
            "parameters": {"values": {"$from": "each"}},
            "depends_on": ["each"],
        },
    ]


class Taskrelay:
    """2 batch workers on db DB; workflows submitted with app.workflows.submit."""

    def __init__(self) -> None:
        from core import registry
        from core.settings import Settings

        self.url = f"{REDIS_BASE}/{DB}"
        self.connection = redis.Redis.from_url(self.url)
        self.connection.flushdb()
        self.settings = Settings.from_env({"REDIS_URL": self.url, "TASKRELAY_TASK_MODULES": "bench.tasks"})
        registry.load(self.settings.task_modules)
        env = child_env(REDIS_URL=self.url, WORKER_CLASS="batch", TASKRELAY_TASK_MODULES="bench.tasks")
        self.workers = [subprocess.Popen([sys.executable, "-m", "jobs.worker"], cwd=ROOT, env=env) for _ in range(2)]
        self.run(_chain(2), "s1")  # the workers are up

    def submit(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        from app.ingress import DirectIngress
        from app.schemas import SubmitWorkflow
        from app.workflows import submit

        ingress = DirectIngress(self.connection, self.settings)
        return submit(ingress, SubmitWorkflow.model_validate({"steps": steps}), lambda _purpose: str(uuid.uuid4()))

    def done(self, task_ids: list[str]) -> bool:
        pipe = self.connection.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(keys.job_key(task_id), "status")
        return all(status == b"finished" for status in pipe.execute())

    def result(self, task_id: str) -> Any:
        from core.storage.records import fetch_job

        job = fetch_job(self.connection, task_id)
        return job.return_value() if job else None

    def run(self, steps: list[dict[str, Any]], last: str) -> tuple[float, Any]:
        started = time.perf_counter()
        answer = self.submit(steps)
        final = answer["steps"][last]["task_id"]
        wait_for(lambda: self.done([final]), 600, "the workflow")
        return time.perf_counter() - started, self.result(final)

    def many(self, workflows: int, length: int) -> float:
        started = time.perf_counter()
        finals = [self.submit(_chain(length))["steps"][f"s{length - 1}"]["task_id"] for _ in range(workflows)]
        wait_for(lambda: self.done(finals), 600, "every workflow")
        return time.perf_counter() - started

    def accept(self, steps: int) -> float:
        started = time.perf_counter()
        self.submit(_fan_in(steps - 1))
        return time.perf_counter() - started

    def close(self) -> None:
        stop_all(self.workers)
        self.connection.flushdb()


class Celery:
    """prefork -c 2 on its own queue; canvas primitives with the Redis result backend."""

    def __init__(self) -> None:
        os.environ["BENCH_CELERY_BACKEND"] = f"{REDIS_BASE}/{CELERY_BACKEND_DB}"
        self.queue = f"bench.canvas.{uuid.uuid4().hex[:8]}"
        os.environ["BENCH_CELERY_QUEUE"] = self.queue
        from bench.celery_app import app, worker_argv

        self.app = app
        app.conf.task_default_queue = self.queue
        redis.Redis.from_url(os.environ["BENCH_CELERY_BACKEND"]).flushdb()
        env = child_env(BENCH_CELERY_QUEUE=self.queue, BENCH_CELERY_BACKEND=os.environ["BENCH_CELERY_BACKEND"])
        self.worker = subprocess.Popen(worker_argv(self.queue), cwd=ROOT, env=env)
        app.tasks["bench.add1"].apply_async(args=(0,)).get(timeout=60)  # the worker is up

    def chain(self, n: int) -> tuple[float, Any]:
        from celery import chain

        add1 = self.app.tasks["bench.add1"]
        started = time.perf_counter()
        value = chain(add1.s(0), *(add1.s() for _ in range(n - 1))).apply_async().get(timeout=600)
        return time.perf_counter() - started, value

    def fan_in(self, n: int) -> tuple[float, Any]:
        from celery import chord, group

        add1, total = self.app.tasks["bench.add1"], self.app.tasks["bench.total"]
        started = time.perf_counter()
        value = chord(group(add1.s(i) for i in range(n)), total.s()).apply_async().get(timeout=600)
        return time.perf_counter() - started, value

    def many(self, workflows: int, length: int) -> float:
        from celery import chain

        add1 = self.app.tasks["bench.add1"]
        started = time.perf_counter()
        results = [chain(add1.s(0), *(add1.s() for _ in range(length - 1))).apply_async() for _ in range(workflows)]
        for result in results:
            result.get(timeout=600)
        return time.perf_counter() - started

    def close(self) -> None:
        from bench.celery_app import STOP_SIGNAL, delete_queue

        stop_all([self.worker], sig=STOP_SIGNAL)
        delete_queue(self.queue)
        redis.Redis.from_url(os.environ["BENCH_CELERY_BACKEND"]).flushdb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny workflows: only proves the harness works")
    args = parser.parse_args()
    chain_n, fan_n, many_n, many_len, accept_n = (5, 20, 5, 3, 50) if args.smoke else (100, 1000, 200, 10, 1000)
    rows: dict[str, dict[str, Any]] = {}
    taskrelay = Taskrelay()
    try:
        seconds, value = taskrelay.run(_chain(chain_n), f"s{chain_n - 1}")
        assert value == chain_n, value
        rows["chain"] = {"taskrelay_s": seconds}
        seconds, value = taskrelay.run(_fan_in(fan_n), "total")
        assert value == sum(range(1, fan_n + 1)), value
        rows["fan-in"] = {"taskrelay_s": seconds}
        seconds, value = taskrelay.run(_map(fan_n), "total")
        assert value == sum(range(1, fan_n + 1)), value
        rows["map"] = {"taskrelay_s": seconds}
        rows["many"] = {"taskrelay_s": taskrelay.many(many_n, many_len)}
        accept_s = taskrelay.accept(accept_n)
    finally:
        taskrelay.close()
    celery = Celery()
    try:
        seconds, value = celery.chain(chain_n)
        assert value == chain_n, value
        rows["chain"]["celery_s"] = seconds
        seconds, value = celery.fan_in(fan_n)
        assert value == sum(range(1, fan_n + 1)), value
        rows["fan-in"]["celery_s"] = seconds
        seconds, value = celery.fan_in(fan_n)  # Celery has no map over a result: the same chord, its size known
        assert value == sum(range(1, fan_n + 1)), value
        rows["map"]["celery_s"] = seconds
        rows["many"]["celery_s"] = celery.many(many_n, many_len)
    finally:
        celery.close()
    labels = {
        "chain": f"chain of {chain_n} passing results",
        "fan-in": f"fan-out of {fan_n} + fan-in",
        "map": f"map over a {fan_n}-element result + fan-in (Celery: the chord again)",
        "many": f"{many_n} workflows of {many_len} steps",
    }
    lines = [
        f"Workflows ({platform.machine()}, {os.cpu_count()} cores; 2 worker processes each; one run)",
        "",
        "| scenario | Taskrelay s | Celery canvas s | Taskrelay steps/s | Celery steps/s | Celery s / Taskrelay s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    steps = {"chain": chain_n, "fan-in": fan_n + 1, "map": fan_n + 2, "many": many_n * many_len}
    for name, row in rows.items():
        ratio = row["celery_s"] / row["taskrelay_s"]
        lines.append(
            f"| {labels[name]} | {row['taskrelay_s']:.2f} | {row['celery_s']:.2f} | "
            f"{steps[name] / row['taskrelay_s']:.0f} | {steps[name] / row['celery_s']:.0f} | {ratio:.2f}x |"
        )
    lines += ["", f"Accepting one {accept_n}-step workflow (check and create): {accept_s * 1000:.0f} ms", ""]
    name = "workflows-smoke" if args.smoke else "workflows"
    save_results(name, "\n".join(lines), {"rows": rows, "accept_s": accept_s})
    print("\n".join(lines))


if __name__ == "__main__":
    print(f"RabbitMQ at {RABBITMQ_URL}", file=sys.stderr)
    main()
