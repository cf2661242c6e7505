"""Capture rq-dashboard with jobs in it and the Swagger UI into docs/ (`make screenshots`).

Runs a real API (gunicorn) on --redis-url (the local Redis's db 12 unless
told otherwise, flushed before and after: never point it at data you keep), submits tasks of
every priority and one that fails, lets a burst worker finish them, submits
more that stay queued, and drives headless Chromium (infra/browser.py) over
the pages. The admin key is made up for the run and never written down.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from infra import browser

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "docs"
REDIS_URL = "redis://127.0.0.1:6379/12"
"""Where the run's tasks go unless --redis-url says otherwise: flushed before and after."""
START_TIMEOUT_S = 30.0
"""How long the API and the burst worker each get, in seconds."""

FINISHED = [("data_processing", "high"), ("data_processing", "high"), ("data_processing", "normal")]
FINISHED += [("data_processing", "normal"), ("data_processing", "low")]
QUEUED = [("data_processing", "high"), ("data_processing", "normal"), ("data_processing", "normal")]
QUEUED += [("data_processing", "low"), ("data_processing", "low"), ("data_processing", "low")]
FAILING: dict[str, Any] = {"task_type": "email_sending", "priority": "normal"}
FAILING["parameters"] = {"to": "ops@example.com", "subject": "Report for {{ customer }}", "body": "no variables"}
"""Fails at once: its subject needs a variable it is not given."""
PAGES = {
    "dashboard-queues.png": "/dashboard/0/view/queues",
    "dashboard-failed.png": "/dashboard/0/view/jobs/normal_priority/failed/8/asc/1",
    "swagger.png": "/openapi/swagger",
}

log = logging.getLogger("taskrelay.screenshots")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _call(method: str, url: str, key: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    request = urllib.request.Request(url, data, headers, method=method)  # noqa: S310 (http, ours)
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 (http, ours)
        return json.loads(answer.read())


def _wait_up(base_url: str, api: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise SystemExit(f"the API exited with code {api.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=1):  # noqa: S310 (http, ours)
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the API did not answer within {START_TIMEOUT_S:.0f} s")


@contextmanager
def running_api(env: dict[str, str]) -> Iterator[str]:
    """Run gunicorn (one process) on a free port until the block ends; yield its base URL."""
    port = _free_port()
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4"]
    argv += ["--log-level", "warning", "app:create_app()"]
    api = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
    try:
        _wait_up(f"http://127.0.0.1:{port}", api)
        yield f"http://127.0.0.1:{port}"
    finally:
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=15)


def submit(base_url: str, key: str, tasks: list[tuple[str, str]]) -> None:
    """Submit each (task_type, priority) with valid parameters."""
    for task_type, priority in tasks:
        body = {"task_type": task_type, "priority": priority, "parameters": {"data": [3, 1, 4, 1, 5]}}
        _call("POST", f"{base_url}/api/tasks", key, body)


def main(argv: list[str] | None = None) -> int:
    """Fill the API with tasks, capture each page of PAGES into docs/, clean the Redis db up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=REDIS_URL, help=f"a Redis db it may flush (default {REDIS_URL})")
    redis_url = parser.parse_args(argv).redis_url
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    key = "tr_" + secrets.token_urlsafe(32)
    env = {**os.environ, "REDIS_URL": redis_url, "TASKRELAY_BOOTSTRAP_KEY": key, "LOG_LEVEL": "WARNING"}
    env["PYTHONPATH"] = str(ROOT)
    connection = redis.Redis.from_url(redis_url)
    connection.flushdb()
    try:
        with running_api(env) as base_url:
            submit(base_url, key, FINISHED)
            _call("POST", f"{base_url}/api/tasks", key, FAILING)
            worker = [sys.executable, "-m", "jobs.worker", "--burst", "--name", "worker-1"]
            ran = subprocess.run(worker, cwd=ROOT, env=env, timeout=START_TIMEOUT_S, capture_output=True, text=True)
            if ran.returncode != 0:  # its log holds the planned failure's traceback: show it only when it matters
                raise SystemExit(f"the burst worker exited with code {ran.returncode}:\n{ran.stderr}")
            submit(base_url, key, QUEUED)
            login = base_url.replace("://", f"://ops:{key}@", 1)
            for name, path in PAGES.items():
                url = (login if path.startswith("/dashboard") else base_url) + path
                browser.screenshot(url, OUT_DIR / name)
                log.info("wrote %s", (OUT_DIR / name).relative_to(ROOT))
    finally:
        connection.flushdb()
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
