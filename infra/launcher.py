"""Run all of Taskrelay in the foreground: a Redis, the API and RQ workers, until Ctrl-C.

    python -m infra.launcher          (what `make run` calls)

Environment:
    REDIS_URL           use this Redis as is; unset: start an embedded one whose data are not kept
    TASKRELAY_EMBEDDED  which embedded Redis: redis-server (the default when on PATH) or fakeredis
    HOST, PORT          where the API listens (default 127.0.0.1, 5000)
    API_WORKERS         gunicorn worker processes (default 2)
    API_THREADS         threads per gunicorn process (default 8)
    WORKERS             RQ worker processes (default 2)
    RABBITMQ_URL        set: the API publishes to RabbitMQ and a bridge process is started too
    TASKRELAY_AUTH      on (default): with no TASKRELAY_BOOTSTRAP_KEY and no key in Redis, an admin key
                        named "make-run" is created and printed once with a ready curl line

Ctrl-C or SIGTERM sends SIGTERM to every child, SIGKILLs what is left after
STOP_GRACE_S, stops the embedded Redis last and exits 0. If a child exits on its
own, the others are stopped and the launcher exits 1. The supervision itself is
infra.processes; which Redis is used, infra.embedded.
"""

from __future__ import annotations

import http.client
import logging
import signal
import sys
import urllib.request
from types import FrameType

from core.connection import connect, redis_errors
from core.errors import TaskrelayError
from core.settings import Settings, starting
from core.storage import apikeys
from infra.embedded import Backend, choose_redis
from infra.processes import Launch, stop_children

API_READY_TIMEOUT_S = 30.0
"""How long the API may take to answer GET /api/health, in seconds."""
RQSCHEDULER = [
    sys.executable,
    "-c",
    "from rq_scheduler.scripts.rqscheduler import main; main()",
    "--job-class",
    "core.storage.queues.JSONJob",
]
"""rq-scheduler's `rqscheduler`, run with this interpreter so it finds the same packages."""
EXAMPLE_TASK = '{"task_type": "data_processing", "priority": "high", "parameters": {"data": "example data"}}'
RUN_KEY_NAME = "make-run"
"""The name of the admin key `make run` creates when Redis holds none."""
BANNER = """\
========================================================================
Taskrelay is running
  API           {url}/api  (health: {url}/api/health)
  Swagger UI    {url}/openapi/swagger
  OpenAPI JSON  {url}/openapi/openapi.json
  Redis         {redis}
  Ingress       {ingress}
  Workers       {workers} RQ worker process(es), and rqscheduler for periodic schedules
  API key       {access}
  Try it        curl -s -X POST {url}/api/tasks -H 'Content-Type: application/json'{key_header} -d '{task}'
Ctrl-C stops everything.
========================================================================"""

log = logging.getLogger("taskrelay.launcher")
audit = logging.getLogger("taskrelay.audit")


def api_answers(base_url: str) -> bool:
    """Return whether GET /api/health answers 200."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/health", timeout=2) as response:  # noqa: S310 (http, ours)
            return response.status == 200
    except (OSError, http.client.HTTPException):
        return False


def api_access(settings: Settings, redis_url: str) -> tuple[str, str]:
    """Return (what the banner says about keys, the X-API-Key value for its curl line).

    With auth on and no key anywhere, create an admin key (RUN_KEY_NAME) so the API can start;
    it is shown here once, and Redis keeps only its digest.
    """
    if not settings.auth:
        return "none needed: TASKRELAY_AUTH=off, anyone who reaches the API may use all of it", ""
    if settings.bootstrap_key:
        return "TASKRELAY_BOOTSTRAP_KEY (admin)", "$TASKRELAY_BOOTSTRAP_KEY"
    connection = connect(redis_url)
    try:
        with redis_errors():
            if apikeys.count(connection):
                return "one of the keys already in Redis (`make keys` lists them)", "$TASKRELAY_API_KEY"
            key, record = apikeys.create(connection, RUN_KEY_NAME, ["admin"])
    finally:
        connection.close()
    audit.info("created key %r (%s) with scopes admin, by make run", record.name, record.id)
    return f"{key}  (admin, named {RUN_KEY_NAME!r}, created now and shown only here)", key


def banner(settings: Settings, base_url: str, backend: Backend, access: tuple[str, str] = ("", "")) -> str:
    """Return what was started and where, for a person reading the terminal."""
    ingress = "direct into RQ (RABBITMQ_URL not set; the RabbitMQ bridge is not used)"
    if settings.rabbitmq_url:
        ingress = "RabbitMQ (RABBITMQ_URL), moved into RQ by the bridge process started here"
    described, key = access
    return BANNER.format(
        url=base_url,
        redis=backend.description,
        ingress=ingress,
        workers=settings.workers,
        task=EXAMPLE_TASK,
        access=described,
        key_header=f' -H "X-API-Key: {key}"' if key else "",
    )


def run(settings: Settings, launch: Launch) -> int:
    """Start Redis, the API and the workers, then wait for a stop request (0) or a child's exit (1)."""
    host, port = settings.host, settings.port
    backend = choose_redis(settings, launch)
    try:
        env = launch.child_environment(REDIS_URL=backend.url)
        access = api_access(settings, backend.url) if launch.running() else ("", "")
        api = [sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", str(settings.api_workers)]
        base_url = f"http://{'127.0.0.1' if host in ('', '0.0.0.0') else host}:{port}"  # noqa: S104 (not a bind)
        if launch.running():
            launch.spawn("api", [*api, "--threads", str(settings.api_threads), "app:create_app()"], env)
            for number in range(1, settings.workers + 1):
                launch.spawn(f"worker {number}", [sys.executable, "-m", "jobs.worker"], env)
            launch.spawn("scheduler", [*RQSCHEDULER, "--url", backend.url, "--interval", "1", "--quiet"], env)
            if settings.rabbitmq_url:
                launch.spawn("bridge", [sys.executable, "-m", "bridge"], env)
            launch.wait_until(lambda: api_answers(base_url), API_READY_TIMEOUT_S, f"no answer from {base_url}")
        if launch.running():
            print(banner(settings, base_url, backend, access), flush=True)
        while launch.running():
            launch.pause()
        if launch.stopping:
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
    settings = starting("launcher")
    if settings is None:
        return 2
    launch = Launch()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        launch.request_stop()

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)
    try:
        return run(settings, launch)
    except TaskrelayError as exc:
        log.error("cannot start Taskrelay: %s", exc)
        stop_children(launch.children)
        return 1


if __name__ == "__main__":
    sys.exit(main())
