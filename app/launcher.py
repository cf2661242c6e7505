"""Run all of Taskrelay in the foreground: a Redis, the API and RQ workers, until Ctrl-C.

    python -m app.launcher          (what `make run` calls)

Environment:
    REDIS_URL           use this Redis as is; unset: start an embedded one whose data are not kept
    TASKRELAY_EMBEDDED  which embedded Redis: redis-server (the default when on PATH) or fakeredis
    HOST, PORT          where the API listens (default 127.0.0.1, 5000)
    API_WORKERS         gunicorn worker processes (default 2)
    API_THREADS         threads per gunicorn process (default 8)
    WORKERS             RQ worker processes (default 2)
    RABBITMQ_URL        set: the API publishes to RabbitMQ and a bridge process is started too

Ctrl-C or SIGTERM sends SIGTERM to every child, SIGKILLs what is left after
STOP_GRACE_S, stops the embedded Redis last and exits 0. If a child exits on its
own, the others are stopped and the launcher exits 1. On Linux the children get
SIGTERM even when the launcher is killed outright (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import redis

from jobs import logs
from jobs.errors import ConfigError, TaskrelayError

ROOT = Path(__file__).resolve().parent.parent
REDIS_READY_TIMEOUT_S = 10.0
"""How long a Redis may take to answer PING, in seconds."""
API_READY_TIMEOUT_S = 30.0
"""How long the API may take to answer GET /api/health, in seconds."""
STOP_GRACE_S = 10.0
"""How long children get to exit after SIGTERM before SIGKILL, in seconds."""
POLL_INTERVAL_S = 0.2
PR_SET_PDEATHSIG = 1
RQSCHEDULER = [
    sys.executable,
    "-c",
    "from rq_scheduler.scripts.rqscheduler import main; main()",
    "--job-class",
    "jobs.schedules.JSONJob",
]
"""rq-scheduler's `rqscheduler`, run with this interpreter so it finds the same packages."""
EXAMPLE_TASK = '{"task_type": "data_processing", "priority": "high", "parameters": {"data": "example data"}}'
BANNER = """\
========================================================================
Taskrelay is running
  API           {url}/api  (health: {url}/api/health)
  Swagger UI    {url}/openapi/swagger
  OpenAPI JSON  {url}/openapi/openapi.json
  Redis         {redis}
  Ingress       {ingress}
  Workers       {workers} RQ worker process(es), and rqscheduler for periodic schedules
  Try it        curl -s -X POST {url}/api/tasks -H 'Content-Type: application/json' -d '{task}'
Ctrl-C stops everything.
========================================================================"""

log = logging.getLogger("taskrelay.launcher")
Process = subprocess.Popen[bytes]


class LaunchError(TaskrelayError):
    """A part of the system could not be started."""


@dataclass
class Backend:
    """The Redis everything talks to, how to describe it and how to stop it."""

    url: str
    description: str
    stop: Callable[[], None] = lambda: None


@dataclass
class Launch:
    """The children by name, and whether someone asked everything to stop."""

    stop_requested: threading.Event = field(default_factory=threading.Event)
    children: dict[str, Process] = field(default_factory=dict)

    def exited(self) -> str | None:
        """Describe a child that has exited, if any."""
        for name, process in self.children.items():
            if process.poll() is not None:
                return f"{name} (pid {process.pid}) exited with code {process.returncode}"
        return None

    def running(self) -> bool:
        """Return whether nobody asked to stop and every child still runs."""
        return not self.stop_requested.is_set() and self.exited() is None

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        """Start `argv` in its own process group, so Ctrl-C reaches only the launcher, which orders the shutdown."""
        # PDEATHSIG follows the thread that forked, so every child must be spawned from the main thread.
        die_with_launcher = _die_with(os.getpid())
        # No stdin: a background process group that reads the terminal would be stopped by SIGTTIN.
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, process_group=0, preexec_fn=die_with_launcher
        )
        self.children[name] = process
        log.info("started %s (pid %d)", name, process.pid)

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, failure: str) -> None:
        """Poll `ready` until true or until not running(); raise LaunchError(failure) after `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        while self.running() and not ready():
            if time.monotonic() > deadline:
                raise LaunchError(f"{failure} within {timeout_s:.0f} s")
            self.stop_requested.wait(POLL_INTERVAL_S)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with(launcher_pid: int) -> Callable[[], None] | None:
    """Return a pre-exec hook that makes the child get SIGTERM when the launcher dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, not in the child: the hook must do as little as possible between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)

    def set_parent_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != launcher_pid:  # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return set_parent_death_signal


def stop_children(children: dict[str, Process]) -> None:
    """SIGTERM every child, then SIGKILL its process group once it exits or STOP_GRACE_S have passed."""
    for process in children.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for name, process in children.items():
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", name, process.pid, STOP_GRACE_S)
        # The whole group: an RQ worker's scheduler outlives its worker if the worker was SIGKILLed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def answers_ping(url: str) -> bool:
    """Return whether the Redis at `url` answers PING within a second."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


def start_redis_server(executable: str, launch: Launch) -> Backend:
    """Start redis-server on a free port, persisting nothing; its stop() also removes its directory."""
    port, data_dir = free_port(), tempfile.mkdtemp(prefix="taskrelay-redis-")
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    launch.spawn("redis-server", [*argv, "--dir", data_dir, "--loglevel", "warning"], dict(os.environ))
    url = f"redis://127.0.0.1:{port}/0"

    def stop() -> None:
        stop_children({"redis-server": launch.children.pop("redis-server")})
        shutil.rmtree(data_dir, ignore_errors=True)

    return Backend(url, f"embedded redis-server at {url} (data not kept)", stop)


def start_fakeredis() -> Backend:
    """Serve an in-memory fakeredis over TCP from a thread of this process."""
    import fakeredis  # only this path needs it

    server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    # A client that died inside BLPOP (an RQ worker) leaves its handler thread waiting out the timeout; as a
    # non-daemon thread (fakeredis's choice) it would keep server_close() and the interpreter from exiting.
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="fakeredis", daemon=True).start()
    url = f"redis://127.0.0.1:{server.server_address[1]}/0"

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return Backend(url, f"embedded fakeredis at {url} (in memory, data not kept)", stop)


def choose_redis(launch: Launch) -> Backend:
    """Return REDIS_URL if set and answering, else an embedded Redis chosen by TASKRELAY_EMBEDDED."""
    if url := os.environ.get("REDIS_URL"):
        if not answers_ping(url):
            raise LaunchError(f"REDIS_URL={url} does not answer PING; start that Redis or unset REDIS_URL")
        return Backend(url, f"REDIS_URL {url}")
    kind, executable = os.environ.get("TASKRELAY_EMBEDDED", ""), shutil.which("redis-server")
    if kind not in ("", "redis-server", "fakeredis"):
        raise ConfigError(f"TASKRELAY_EMBEDDED must be redis-server or fakeredis, got {kind!r}")
    if kind == "redis-server" and executable is None:
        raise LaunchError("TASKRELAY_EMBEDDED=redis-server but no redis-server is on PATH")
    use_fakeredis = kind == "fakeredis" or executable is None
    backend = start_fakeredis() if use_fakeredis else start_redis_server(str(executable), launch)
    try:
        launch.wait_until(lambda: answers_ping(backend.url), REDIS_READY_TIMEOUT_S, f"no PING from {backend.url}")
    except LaunchError:
        backend.stop()
        raise
    return backend


def api_answers(base_url: str) -> bool:
    """Return whether GET /api/health answers 200."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/health", timeout=2) as response:  # noqa: S310 (http, ours)
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def banner(base_url: str, backend: Backend, workers: int) -> str:
    """Return what was started and where, for a person reading the terminal."""
    ingress = "direct into RQ (RABBITMQ_URL not set; the RabbitMQ bridge is not used)"
    if os.environ.get("RABBITMQ_URL"):
        ingress = "RabbitMQ (RABBITMQ_URL), moved into RQ by the bridge process started here"
    return BANNER.format(url=base_url, redis=backend.description, ingress=ingress, workers=workers, task=EXAMPLE_TASK)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name) or str(default)
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


def run(launch: Launch) -> int:
    """Start Redis, the API and the workers, then wait for a stop request (0) or a child's exit (1)."""
    host, port = os.environ.get("HOST", "127.0.0.1"), _int_env("PORT", 5000)
    api_workers, workers = _int_env("API_WORKERS", 2), _int_env("WORKERS", 2)
    api_threads = _int_env("API_THREADS", 8)
    backend = choose_redis(launch)
    try:
        env = dict(os.environ, REDIS_URL=backend.url)
        api = [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(api_workers)]
        base_url = f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"  # noqa: S104 (not a bind)
        if launch.running():
            launch.spawn("api", [*api, "--threads", str(api_threads), "app:create_app()"], env)
            for number in range(1, workers + 1):
                launch.spawn(f"worker {number}", [sys.executable, "-m", "jobs.worker"], env)
            launch.spawn("scheduler", [*RQSCHEDULER, "--url", backend.url, "--interval", "1", "--quiet"], env)
            if os.environ.get("RABBITMQ_URL"):
                launch.spawn("bridge", [sys.executable, "-m", "bridge"], env)
            launch.wait_until(lambda: api_answers(base_url), API_READY_TIMEOUT_S, f"no answer from {base_url}")
        if launch.running():
            print(banner(base_url, backend, workers), flush=True)
        while launch.running():
            launch.stop_requested.wait(POLL_INTERVAL_S)
        if launch.stop_requested.is_set():
            log.info("stopping: sending SIGTERM to every child")
            return 0
        log.error("%s on its own; stopping everything", launch.exited())
        return 1
    finally:
        # Redis goes last, so workers and the API can finish talking to it while they stop.
        stop_children({name: process for name, process in launch.children.items() if name != "redis-server"})
        backend.stop()


def main() -> int:
    """Run until Ctrl-C or SIGTERM; return the exit code."""
    logs.setup(os.environ.get("LOG_LEVEL", "INFO"))
    launch = Launch()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        launch.stop_requested.set()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    try:
        return run(launch)
    except TaskrelayError as exc:
        log.error("cannot start Taskrelay: %s", exc)
        stop_children(launch.children)
        return 1


if __name__ == "__main__":
    sys.exit(main())
