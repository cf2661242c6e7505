"""Each benchmark runs end to end in a tiny mode, so the harness cannot rot (these time nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.conftest import REDIS_TEST_URL, claimed_db, require_service, require_tool
from tests.processes import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq, pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def bench_dbs() -> Iterator[str]:
    """Two test databases of our own, locked like any test's, for the benchmark to flush and fill."""
    require_service("Redis", REDIS_TEST_URL)
    with ExitStack() as stack:
        yield ",".join(str(stack.enter_context(claimed_db())) for _ in range(2))


def run_bench(dbs: str, *argv: str) -> str:
    env = {**os.environ, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), "BENCH_REDIS_DBS": dbs}
    command = [sys.executable, "-m", *argv]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_compare_smoke(bench_dbs, rabbitmq_url):
    output = run_bench(bench_dbs, "bench.compare", "--smoke")
    assert "Taskrelay/Celery" in output
    data = json.loads((ROOT / "bench" / "results" / "compare-smoke.json").read_text())
    for workload in ("noop", "cpu"):
        configs = data["workloads"][workload]["configs"]
        assert set(configs) == {"taskrelay", "celery", "celery-c4", "rq-fork", "rq-simple"}
        assert all(c["rate"] > 0 for c in configs.values())


def test_latency_smoke(bench_dbs, rabbitmq_url):
    output = run_bench(bench_dbs, "bench.latency", "--smoke")
    assert "| taskrelay | 20 |" in output and "| celery | 20 |" in output
    assert "| taskrelay redis-first | 20 |" in output and "- taskrelay redis-first: client→API" in output
    assert "| taskrelay rabbitmq | 20 |" in output and "- taskrelay rabbitmq: client→API" in output


def test_ingress_smoke(bench_dbs, rabbitmq_url):
    output = run_bench(bench_dbs, "bench.ingress", "--smoke")
    assert "rabbit / bare" in output and "rabbit / pika" in output and "bridge:" in output
    assert "| pika |" in output and "| limited |" in output and "rate limit's cost" in output
    assert "| dual |" in output and "dual / rabbit" in output


def test_scale_smoke(bench_dbs):
    url = f"{REDIS_TEST_URL.rstrip('/')}/{bench_dbs.split(',')[0]}"
    output = run_bench(bench_dbs, "bench.scale", "--smoke", "--redis", url)
    assert "GET /api/tasks (first page, 50) | 5 |" in output
    assert "job hashes left: 0" in output


def test_priority_smoke(bench_dbs, rabbitmq_url):
    output = run_bench(bench_dbs, "bench.priority", "--smoke")
    for config in ("taskrelay-batch", "taskrelay-fork", "celery", "celery-acks-late"):
        assert f"| {config} |" in output
    rows = json.loads((ROOT / "bench" / "results" / "priority-smoke.json").read_text())["rows"]
    assert all(row["wait_ms"] > 0 and row["low_started_after"] >= 0 for row in rows.values())


def test_memory_smoke():
    require_tool("redis-server", "bench.memory starts private redis-servers of its own")
    output = run_bench("13,14", "bench.memory", "--smoke")  # it touches no shared database
    assert "| taskrelay, Redis defaults |" in output and "| celery result record |" in output
    rows = json.loads((ROOT / "bench" / "results" / "memory-smoke.json").read_text())["rows"]
    assert all(row["bytes_per_task"] > 0 for row in rows.values())


def test_workflows_smoke(bench_dbs, rabbitmq_url):
    output = run_bench(bench_dbs, "bench.workflows", "--smoke")
    assert "| chain of 5 passing results |" in output and "Accepting one 50-step workflow" in output
    rows = json.loads((ROOT / "bench" / "results" / "workflows-smoke.json").read_text())["rows"]
    assert set(rows) == {"chain", "fan-in", "map", "many"}


def test_durability_smoke(bench_dbs, rabbitmq_url):
    output = run_bench(bench_dbs, "bench.durability", "--smoke")
    assert "| appendfsync always |" in output and "| off |" in output


def test_coldstart_smoke(bench_dbs):
    output = run_bench(bench_dbs, "bench.coldstart", "--smoke")
    assert "| Taskrelay handler (`make lambda-code`: bytecode compiled) |" in output
    assert "| Taskrelay / bare |" in output
    assert "| Taskrelay from sources only (no .pyc of ours) |" in output
    medians = json.loads((ROOT / "bench" / "results" / "coldstart-smoke.json").read_text())["medians"]
    assert medians["taskrelay"]["first_ms"] > medians["taskrelay"]["import_ms"] > 0
    assert medians["taskrelay+spec"]["spec_ms"] > 0 and medians["bare"]["first_ms"] > 0
    assert medians["importtime"]["import_ms"] > 0  # python -X importtime's own count of `import handler`


def test_chaos_smoke(bench_dbs, rabbitmq_url):
    """The whole chaos schedule at a small scale: its own Redis and RabbitMQ node, every kill; nothing lost."""
    for tool in ("redis-server", "rabbitmq-server"):
        require_tool(tool, "bench.chaos starts its own redis-server and rabbitmq-server node")
    output = run_bench(bench_dbs, "bench.chaos", "--smoke")
    data = json.loads((ROOT / "bench" / "results" / "chaos-smoke.json").read_text())
    assert data["lost"] == 0, data["lost_detail"]
    assert data["accepted"] == data["tasks_submitted"] and data["workflows_finished"] == data["workflows_accepted"]
    assert data["503_without_retry_after"] == 0
    assert sum(group["count"] for group in data["503_by_cause"]) == data["http_statuses"].get("503", 0)
    assert "Redis restarted (SIGKILL)" in output and "RabbitMQ restarted" in output


@pytest.mark.timeout(90)
def test_soak_smoke(rabbitmq_url):
    """1,500 tasks over 10 s against its own redis-server: nothing lost, the RSS and Redis memory report written."""
    require_tool("redis-server", "bench.soak starts a private redis-server of its own")
    output = run_bench("13,14", "bench.soak", "--smoke")  # it touches no shared database
    data = json.loads((ROOT / "bench" / "results" / "soak-smoke.json").read_text())
    assert data["lost"] == 0, data["lost_sample"]
    answers = {key: data[key] for key in ("http_statuses", "rejected", "unsent", "connection_errors")}
    assert data["accepted"] == data["tasks"] == data["finished"], answers
    assert {"api master", "bridge", "worker 1", "worker 2"} <= set(data["rss"])
    assert sum(label.startswith("api worker ") for label in data["rss"]) == 2
    assert "| baseline, before the first submit |" in output and "Verdict: " in output
