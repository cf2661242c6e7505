"""GET /metrics against the real Redis: exact counts from tasks submitted through two API processes and run by two
worker processes (and by the fork and simple worker classes), and RabbitMQ's ingress counted once, at accept time."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import KEY_HEADER, wait_until
from tests.processes import ROOT, free_port, http, spawn_api, spawn_worker, stop_worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str) -> Samples:
    request = urllib.request.Request(f"{base_url}/metrics", headers=KEY_HEADER)
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, got), v in samples.items() if n == name and wanted <= got)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def counters(samples: Samples) -> Samples:
    return {key: v for key, v in samples.items() if key[0].endswith("_total")}


def finished_at_least(url: str, count: int) -> Samples:
    """Scrape `url` until `count` tasks are counted as finished; return that scrape."""

    def check() -> Samples | None:
        samples = scrape(url)
        return samples if total(samples, "taskrelay_tasks_finished_total") >= count else None

    return wait_until(check, 60, f"{count} tasks to be counted as finished")


def settled(url: str) -> Samples:
    """Scrape `url` once no task is queued, claimed, running or waiting for a retry: nothing more will be counted."""

    def check() -> Samples | None:
        samples = scrape(url)
        busy = sum(total(samples, "taskrelay_queue_length", state=s) for s in ("queued", "started", "scheduled"))
        return samples if busy == 0 else None

    return wait_until(check, 30, "the queues to empty")


@contextmanager
def running(redis_url: str, apis: int, worker_classes: tuple[str, ...], **env: str) -> Iterator[list[str]]:
    """Run `apis` separate API processes (one gunicorn each, own port) and a worker per class; yield the base URLs."""
    ports = [free_port() for _ in range(apis)]
    processes = [spawn_api(redis_url, port, RETRY_BASE_S="0", **env) for port in ports]
    processes += [spawn_worker(redis_url, WORKER_CLASS=kind, **env) for kind in worker_classes]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    try:

        def up() -> bool:
            try:
                answers = [http("GET", f"{url}/api/health", timeout=1) for url in urls]
            except OSError:
                return False
            return all(code == 200 and health["workers"] >= len(worker_classes) for code, health in answers)

        wait_until(up, 30, "the APIs and workers to come up")
        yield urls
    finally:
        for process in processes:
            stop_worker(process)


def spawn_bridge(redis_url: str, **env: str) -> subprocess.Popen:
    """Start `python -m bridge` against `redis_url` (stop it with stop_worker)."""
    child_env = {**os.environ, "REDIS_URL": redis_url, "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT), **env}
    child_env.setdefault("TASKRELAY_TASK_MODULES", "tests.fixture_tasks")
    return subprocess.Popen([sys.executable, "-m", "bridge"], cwd=ROOT, env=child_env, start_new_session=True)


def submit_all(urls: list[str], bodies: list[dict]) -> None:
    """POST every body, alternating between the APIs, from 8 threads."""

    def post(index: int) -> None:
        status, answer = http("POST", f"{urls[index % len(urls)]}/api/tasks", bodies[index])
        assert status == 202, answer

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post, range(len(bodies))))


ECHO = {"task_type": "test_echo", "parameters": {"n": 1}}
MIX = (
    [ECHO] * 60
    + [{**ECHO, "priority": "high"}] * 20
    + [{"task_type": "test_bad_input", "parameters": {}}] * 10
    + [{"task_type": "test_flaky", "parameters": {"succeed_on": 2}}] * 10
)


def test_100_tasks_through_two_apis_and_two_workers_are_counted_exactly(redis_url):
    with running(redis_url, apis=2, worker_classes=("batch", "batch")) as urls:
        submit_all(urls, MIX)

        finished_at_least(urls[0], 100)
        samples = settled(urls[0])
        assert counters(scrape(urls[1])) == counters(samples)  # every API process answers the same counts
        workers = total(samples, "taskrelay_workers")
    submitted = "taskrelay_tasks_submitted_total"
    assert value(samples, submitted, task_type="test_echo", priority="normal") == 60
    assert value(samples, submitted, task_type="test_echo", priority="high") == 20
    assert value(samples, submitted, task_type="test_bad_input", priority="normal") == 10
    assert value(samples, submitted, task_type="test_flaky", priority="normal") == 10
    finished = "taskrelay_tasks_finished_total"
    assert value(samples, finished, task_type="test_echo", queue="normal_priority", state="SUCCESS") == 60
    assert value(samples, finished, task_type="test_echo", queue="high_priority", state="SUCCESS") == 20
    assert value(samples, finished, task_type="test_bad_input", queue="normal_priority", state="FAILURE") == 10
    assert value(samples, finished, task_type="test_flaky", queue="normal_priority", state="SUCCESS") == 10
    assert total(samples, finished) == 100
    assert value(samples, "taskrelay_task_retries_total", task_type="test_flaky") == 10
    assert total(samples, "taskrelay_task_runtime_seconds_count") == 90
    assert value(samples, "taskrelay_task_runtime_seconds_count", task_type="test_echo") == 80
    assert total(samples, "taskrelay_queue_length", state="queued") == 0
    assert total(samples, "taskrelay_queue_length", state="failed") == 10
    assert workers == 2


@pytest.mark.parametrize("worker_class", ["fork", "simple"])
def test_the_fork_and_simple_workers_count_exactly_too(redis_url, worker_class):
    bodies = [ECHO] * 8 + [{"task_type": "test_bad_input", "parameters": {}}] * 2
    bodies += [{"task_type": "test_flaky", "parameters": {"succeed_on": 2}}] * 2
    with running(redis_url, apis=1, worker_classes=(worker_class,)) as urls:
        submit_all(urls, bodies)
        finished_at_least(urls[0], 12)
        samples = settled(urls[0])
    finished = "taskrelay_tasks_finished_total"
    assert value(samples, finished, task_type="test_echo", queue="normal_priority", state="SUCCESS") == 8
    assert value(samples, finished, task_type="test_bad_input", queue="normal_priority", state="FAILURE") == 2
    assert value(samples, finished, task_type="test_flaky", queue="normal_priority", state="SUCCESS") == 2
    assert total(samples, finished) == 12
    assert value(samples, "taskrelay_task_retries_total", task_type="test_flaky") == 2
    assert total(samples, "taskrelay_task_runtime_seconds_count") == 10


@pytest.mark.rabbitmq
@pytest.mark.parametrize("mode", ["rabbitmq", "dual"])
def test_through_rabbitmq_a_task_is_counted_once_at_accept_time(redis_url, rabbitmq_url, ingress_queue, mode):
    env = {"RABBITMQ_URL": rabbitmq_url, "INGRESS_QUEUE": ingress_queue, "INGRESS_MODE": mode}
    with running(redis_url, apis=2, worker_classes=("batch",), **env) as urls:
        code, ready = http("GET", f"{urls[0]}/readyz", headers={})
        assert code == 200 and ready["rabbitmq"] == "ok"
        submit_all(urls, [ECHO] * 20)
        before = scrape(urls[1])  # no bridge yet: accepted, counted, waiting in RabbitMQ
        assert value(before, "taskrelay_tasks_submitted_total", task_type="test_echo", priority="normal") == 20
        assert value(before, "taskrelay_ingress_messages", queue=ingress_queue) == 20
        assert value(before, "taskrelay_ingress_messages", queue=f"{ingress_queue}.dead") == 0
        lag = value(before, "taskrelay_bridge_lag_seconds") or 0
        assert lag > 0 if mode == "rabbitmq" else lag == 0  # dual: the API queued them in RQ itself
        bridge = spawn_bridge(redis_url, **env)
        try:
            finished_at_least(urls[0], 20)
            # In dual mode the tasks may finish before the bridge has taken their messages.
            wait_until(
                lambda: value(scrape(urls[0]), "taskrelay_ingress_messages", queue=ingress_queue) == 0,
                30,
                "the bridge to empty the ingress",
            )
            samples = settled(urls[0])
        finally:
            stop_worker(bridge)
    assert value(samples, "taskrelay_tasks_submitted_total", task_type="test_echo", priority="normal") == 20
    finished = "taskrelay_tasks_finished_total"
    assert value(samples, finished, task_type="test_echo", queue="normal_priority", state="SUCCESS") == 20
    assert value(samples, "taskrelay_ingress_messages", queue=ingress_queue) == 0
    assert value(samples, "taskrelay_bridge_lag_seconds") == 0
