"""The Redis `make run` uses: REDIS_URL as it is, or an embedded one whose data are not kept.

redis-server on a free port when it is on PATH (TASKRELAY_EMBEDDED=redis-server),
else an in-process fakeredis served over TCP (TASKRELAY_EMBEDDED=fakeredis).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

from core.connection import answers_ping
from core.errors import LaunchError
from core.settings import Settings
from infra.processes import Launch, free_port, stop_children

REDIS_READY_TIMEOUT_S = 10.0
"""How long a Redis may take to answer PING, in seconds."""


@dataclass
class Backend:
    """The Redis everything talks to, how to describe it and how to stop it."""

    url: str
    description: str
    stop: Callable[[], None] = lambda: None


REDIS_MEMORY_SETTINGS = {"hash-max-listpack-value": "1024", "stream-node-max-bytes": "256"}
"""What README's "Redis memory" recommends for any Redis behind Taskrelay (bench.memory measures it)."""


def start_redis_server(executable: str, launch: Launch) -> Backend:
    """Start redis-server on a free port, persisting nothing; its stop() also removes its directory."""
    port, data_dir = free_port(), tempfile.mkdtemp(prefix="taskrelay-redis-")
    argv = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += [arg for name, value in REDIS_MEMORY_SETTINGS.items() for arg in (f"--{name}", value)]
    launch.spawn("redis-server", [*argv, "--dir", data_dir, "--loglevel", "warning"], launch.child_environment())
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


def choose_redis(settings: Settings, launch: Launch) -> Backend:
    """Return REDIS_URL if set and answering, else an embedded Redis chosen by TASKRELAY_EMBEDDED."""
    if settings.redis_url_set:
        url = settings.redis_url
        if not answers_ping(url):
            raise LaunchError(f"REDIS_URL={url} does not answer PING; start that Redis or unset REDIS_URL")
        return Backend(url, f"REDIS_URL {url}")
    kind, executable = settings.embedded_redis, shutil.which("redis-server")
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
