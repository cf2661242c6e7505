"""Start the API (gunicorn) and workers as real processes for integration tests, and stop them after."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.helpers import KEY_HEADER, TEST_API_KEY, wait_until

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(
    method: str, url: str, body: Any = None, timeout: float = 10.0, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """Send one JSON request with TEST_API_KEY (unless `headers` are given); return (status, decoded JSON body)."""
    data = json.dumps(body).encode() if body is not None else None
    sent = {"Content-Type": "application/json", **(KEY_HEADER if headers is None else headers)}
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class System:
    """A running API and its workers."""

    base_url: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    def submit(self, body: dict[str, Any]) -> str:
        status, answer = http("POST", f"{self.base_url}/api/tasks", body)
        assert status == 202, answer
        return answer["task_id"]

    def status(self, task_id: str) -> dict[str, Any]:
        code, answer = http("GET", f"{self.base_url}/api/tasks/{task_id}")
        assert code == 200, answer
        return answer

    def wait_for(self, task_id: str, states: tuple[str, ...] = ("SUCCESS", "FAILURE"), timeout: float = 30.0) -> dict:
        """Return the task's status once it reaches one of `states`; fail after `timeout` seconds."""
        last: dict[str, Any] = {}

        def reached() -> dict | None:
            last.update(self.status(task_id))
            return dict(last) if last["state"] in states else None

        return wait_until(reached, timeout, f"task {task_id} to reach {'/'.join(states)} (last seen: {last})")


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env=env, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def spawn_worker(redis_url: str, **extra: str) -> subprocess.Popen:
    """Start `python -m jobs.worker` (batch unless WORKER_CLASS is given) with 1 s heartbeats and maintenance."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "WORKER_CLASS": "batch",
        "JOB_HEARTBEAT_S": "1",
        "MAINTENANCE_INTERVAL_S": "1",
        "TASKRELAY_TASK_MODULES": "tests.fixture_tasks",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **extra,
    }
    code = env.pop("TASKRELAY_TEST_WORKER_CODE", None)  # a test's patch, run in the worker before it starts
    if code is not None:
        return _spawn([sys.executable, "-c", f"{code}\nfrom jobs.worker import main\nraise SystemExit(main())"], env)
    return _spawn([sys.executable, "-m", "jobs.worker"], env)


def stop_worker(process: subprocess.Popen, kill: bool = False) -> None:
    """SIGTERM (or, with `kill`, SIGKILL) a process started by spawn_worker and its process group; reap it."""
    if kill and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    _stop(process)


@contextmanager
def killed_and_replaced(redis_url: str, ready: Callable[[], bool], what: str, **env: str) -> Iterator[None]:
    """Run a worker until `ready()` holds, SIGKILL it and start a fresh one for the block; stop it after."""
    first = spawn_worker(redis_url, **env)
    second = None
    try:
        wait_until(ready, 60, what)
        stop_worker(first, kill=True)
        second = spawn_worker(redis_url, **env)
        yield
    finally:
        for process in (first, second):
            if process is not None:
                stop_worker(process, kill=True)


@contextmanager
def running_system(redis_url: str, workers: int = 2, env: dict[str, str] | None = None) -> Iterator[System]:
    """Run gunicorn and `workers` RQ workers against `redis_url` until the block ends (TEST_API_KEY is admin)."""
    port = free_port()
    child_env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TASKRELAY_BOOTSTRAP_KEY": TEST_API_KEY,
        "TASKRELAY_TASK_MODULES": "tests.fixture_tasks",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    system = System(base_url=f"http://127.0.0.1:{port}")
    api = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4"]
    try:
        system.processes.append(_spawn([*api, "--log-level", "warning", "app:create_app()"], child_env))
        for _ in range(workers):
            system.processes.append(_spawn([sys.executable, "-m", "jobs.worker"], child_env))

        def up() -> bool:
            try:
                code, health = http("GET", f"{system.base_url}/api/health", timeout=1)
            except OSError:
                return False
            return code == 200 and health["workers"] >= workers

        wait_until(up, START_TIMEOUT_S, "the API and its workers to come up")
        yield system
    finally:
        for process in system.processes:
            _stop(process)


def spawn_api(redis_url: str, port: int, **extra: str) -> subprocess.Popen:
    """Start gunicorn (one process) on 127.0.0.1:`port` (TEST_API_KEY is admin); stop it with stop_worker."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "TASKRELAY_BOOTSTRAP_KEY": TEST_API_KEY,
        "TASKRELAY_TASK_MODULES": "tests.fixture_tasks",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        **extra,
    }
    api = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1"]
    return _spawn([*api, "--threads", "4", "--log-level", "warning", "app:create_app()"], env)


@contextmanager
def private_redis(port: int) -> Iterator[subprocess.Popen]:
    """Run a redis-server of the test's own on `port` (no persistence) for the block: one it may stop or fill.

    It runs in a directory of its own, where a replica writes the copy it receives."""
    with tempfile.TemporaryDirectory(prefix="taskrelay-redis-") as directory:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            cwd=directory,
        )
        try:
            wait_until(lambda: _pings(port), what="redis-server to start")
            yield process
        finally:
            process.terminate()
            process.wait(timeout=10)


def _pings(port: int) -> bool:
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False
    finally:
        client.close()


@contextmanager
def redis_full(port: int) -> Iterator[None]:
    """Make the redis-server on `port` refuse every write as full (maxmemory 1 byte, noeviction) for the block."""
    client = redis.Redis(port=port)
    try:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", 1)
        yield
    finally:
        client.config_set("maxmemory", 0)
        client.close()
