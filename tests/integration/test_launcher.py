"""The launcher runs the whole system in one command and leaves no process behind when it stops."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BANNER_END = "Ctrl-C stops everything."
BANNER_TIMEOUT_S = 45.0
TASK_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 20.0
"""Longer than the launcher's own 10 s grace period before it SIGKILLs."""
ORPHAN_TIMEOUT_S = 10.0
"""How long children may take to notice the launcher was SIGKILLed (PDEATHSIG, then their own shutdown)."""
IGNORED_ENV = ("REDIS_URL", "RABBITMQ_URL", "HOST", "TASKRELAY_EMBEDDED", "TASKRELAY_AUTH", "TASKRELAY_BOOTSTRAP_KEY")
"""Settings of whoever runs the tests that would change what the launcher starts."""
EXAMPLE_TASK = {"task_type": "data_processing", "priority": "high", "parameters": {"data": "example data"}}

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stat(pid: int) -> tuple[str, int, str] | None:
    """Return (state, ppid, start time) of `pid` from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the fields after its last ')' do not.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), fields[19]


@dataclass
class DescendantWatch:
    """Record every process below `root` (pid and start time, so a reused pid is not mistaken for it)."""

    root: int
    seen: dict[int, str] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        children: dict[int, list[int]] = {}
        starts: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
                children.setdefault(stat[1], []).append(int(entry.name))
                starts[int(entry.name)] = stat[2]
        pending = list(children.get(self.root, []))
        while pending:
            pid = pending.pop()
            self.seen.setdefault(pid, starts[pid])
            pending.extend(children.get(pid, []))

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def start(self) -> None:
        threading.Thread(target=self._run, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def alive(self) -> list[int]:
        """Return the recorded descendants still running (zombies count as gone)."""
        return [
            pid
            for pid, started in self.seen.items()
            if (stat := _stat(pid)) is not None and stat[2] == started and stat[0] != "Z"
        ]


@dataclass
class Launched:
    """A running launcher, its output file and the API it serves."""

    process: subprocess.Popen[bytes]
    output: Path
    base_url: str
    watch: DescendantWatch

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for_banner(self) -> str:
        deadline = time.monotonic() + BANNER_TIMEOUT_S
        while time.monotonic() < deadline:
            if BANNER_END in (text := self.text()):
                return text
            if self.process.poll() is not None:
                pytest.fail(f"launcher exited with {self.process.returncode} before its banner:\n{text}")
            time.sleep(0.1)
        pytest.fail(f"no banner within {BANNER_TIMEOUT_S} s:\n{self.text()}")


@contextmanager
def launcher(tmp_path: Path, **extra_env: str) -> Iterator[Launched]:
    """Start `python -m infra.launcher` on a free port; kill whatever is left of it afterwards, pass or fail."""
    port = _free_port()
    env = {name: value for name, value in os.environ.items() if name not in IGNORED_ENV}
    # TMPDIR: the embedded redis-server's directory lands under tmp_path, even when the launcher is SIGKILLed.
    env.update(TMPDIR=str(tmp_path), PORT=str(port), WORKERS="1", API_WORKERS="1", **extra_env)
    output = tmp_path / "launcher.out"
    with output.open("wb") as sink:
        # A file, not a pipe: nobody has to keep draining the children's logs.
        process = subprocess.Popen(
            [sys.executable, "-m", "infra.launcher"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    watch = DescendantWatch(process.pid)
    watch.start()
    try:
        yield Launched(process, output, f"http://127.0.0.1:{port}", watch)
    finally:
        watch.stop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        for pid in watch.alive():
            os.kill(pid, signal.SIGKILL)


def _http(method: str, url: str, key: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _printed_key(banner: str) -> str:
    """Return the API key the banner's curl line sends (the one `make run` created)."""
    match = re.search(r'-H "X-API-Key: (tr_[A-Za-z0-9_-]{43})"', banner)
    assert match, banner
    return match.group(1)


def _run_example_task(base_url: str, key: str) -> dict[str, Any]:
    task_id = _http("POST", f"{base_url}/api/tasks", key, EXAMPLE_TASK)["task_id"]
    deadline = time.monotonic() + TASK_TIMEOUT_S
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            task = _http("GET", f"{base_url}/api/tasks/{task_id}", key)
        except urllib.error.HTTPError as exc:
            # Through RabbitMQ the PENDING record is best effort: a Redis too slow to take it (a loaded machine)
            # leaves the task unreadable until the bridge has moved it. Anything but that 404 is a failure.
            if exc.code != 404:
                raise
            task = {"state": "not yet readable"}
        if task["state"] in ("SUCCESS", "FAILURE"):
            return task
        time.sleep(0.1)
    pytest.fail(f"task {task_id} did not finish within {TASK_TIMEOUT_S} s: {task}")


def _wait_until_gone(watch: DescendantWatch, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while (alive := watch.alive()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


@contextmanager
def own_redis_server(tmp_path: Path) -> Iterator[str]:
    """Run a throwaway redis-server (no persistence) and yield its URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not on PATH")
    port = _free_port()
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = subprocess.Popen([*argv, "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.kill()
        server.wait()


@pytest.mark.parametrize(
    ("embedded", "described_as"),
    [("redis-server", "embedded redis-server at redis://127.0.0.1:"), ("fakeredis", "embedded fakeredis at")],
)
def test_runs_a_task_and_stops_cleanly_on_ctrl_c(tmp_path: Path, embedded: str, described_as: str) -> None:
    if embedded == "redis-server" and shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH")
    with launcher(tmp_path, TASKRELAY_EMBEDDED=embedded) as launched:
        banner = launched.wait_for_banner()
        assert described_as in banner
        assert f"{launched.base_url}/openapi/swagger" in banner
        key = _printed_key(banner)
        assert "named 'make-run'" in banner

        task = _run_example_task(launched.base_url, key)
        assert task["state"] == "SUCCESS", task
        assert launched.text().count(key) == 2  # the banner's key line and curl line; never a log line
        assert task["status"]["result"]["data"] == {"data": "example data"}
        assert task["status"]["result"]["processed"] is True
        launched.watch.sample()
        # redis-server (when used), gunicorn master and worker, RQ worker and its scheduler
        assert len(launched.watch.seen) >= 3, launched.watch.seen

        launched.process.send_signal(signal.SIGINT)
        assert launched.process.wait(EXIT_TIMEOUT_S) == 0, launched.text()
        assert _wait_until_gone(launched.watch, 1.0) == [], launched.text()
        assert list(tmp_path.glob("taskrelay-redis-*")) == []


def test_children_exit_when_the_launcher_is_killed(tmp_path: Path) -> None:
    with launcher(tmp_path) as launched:
        launched.wait_for_banner()
        launched.watch.sample()
        assert launched.watch.seen

        launched.process.kill()
        launched.process.wait(EXIT_TIMEOUT_S)
        assert _wait_until_gone(launched.watch, ORPHAN_TIMEOUT_S) == [], launched.text()


def test_a_child_that_dies_stops_everything_and_exits_1(tmp_path: Path) -> None:
    with own_redis_server(tmp_path) as redis_url, launcher(tmp_path, REDIS_URL=redis_url) as launched:
        assert f"REDIS_URL {redis_url}" in launched.wait_for_banner()
        launched.watch.sample()
        worker = next(
            pid
            for pid in launched.watch.seen
            if (stat := _stat(pid)) is not None
            and stat[1] == launched.process.pid
            and b"jobs.worker" in Path(f"/proc/{pid}/cmdline").read_bytes()
        )

        # SIGKILL, so the worker cannot stop its own scheduler process: the launcher must.
        os.kill(worker, signal.SIGKILL)
        assert launched.process.wait(EXIT_TIMEOUT_S) == 1, launched.text()
        assert "exited with code -9 on its own" in launched.text()
        assert _wait_until_gone(launched.watch, 1.0) == [], launched.text()


@pytest.mark.rabbitmq
def test_with_rabbitmq_the_bridge_is_started_and_tasks_flow_through_it(
    tmp_path: Path, rabbitmq_url: str, ingress_queue: str
) -> None:
    with launcher(tmp_path, TASKRELAY_EMBEDDED="fakeredis", RABBITMQ_URL=rabbitmq_url, INGRESS_QUEUE=ingress_queue) as (
        launched
    ):
        banner = launched.wait_for_banner()
        assert "moved into RQ by the bridge" in banner
        task = _run_example_task(launched.base_url, _printed_key(banner))
        assert task["state"] == "SUCCESS", task
        launched.process.send_signal(signal.SIGINT)
        assert launched.process.wait(EXIT_TIMEOUT_S) == 0, launched.text()
        assert _wait_until_gone(launched.watch, 1.0) == [], launched.text()
