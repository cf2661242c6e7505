"""A Redis that answers but refuses writes, without RabbitMQ: full (its maxmemory reached, noeviction), or a
replica (READONLY, as the old primary in a failover). A clear 503, workers that wait for room, and a reconnect
that finds the new primary. And one that stops answering (frozen): one socket timeout, then a 503.

(A full Redis with RabbitMQ: the API still accepts into it and the bridge waits; tests/integration/test_bridge.py.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import redis

from app import create_app
from core.connection import connect, eviction_warning
from tests.conftest import require_tool
from tests.helpers import keyed_settings, wait_until
from tests.processes import ROOT, free_port, private_redis, redis_full, spawn_worker, stop_worker
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.redis, pytest.mark.slow]

TASK = {"task_type": "data_processing", "priority": "high", "parameters": {"data": "example data"}}


@pytest.fixture
def own_redis() -> Iterator[tuple[int, redis.Redis]]:
    """A redis-server of this test's own (it fills it), and a client of it."""
    require_tool("redis-server", "the test fills a Redis of its own")
    port = free_port()
    connection = connect(f"redis://127.0.0.1:{port}/0", socket_timeout_s=2)
    with private_redis(port):
        yield port, connection
    connection.close()


def oom_refusals(connection: redis.Redis) -> int:
    """How many commands this Redis refused as out of memory (INFO errorstats)."""
    return int(connection.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def test_a_full_redis_gets_a_503_naming_it_and_workers_wait_for_room(own_redis):
    port, connection = own_redis
    url = f"redis://127.0.0.1:{port}/0"
    app = create_app(keyed_settings({"REDIS_URL": url, "RETRY_BASE_S": "0"}), connection)
    client = app.test_client()
    queued = [client.post("/api/tasks", json=TASK).json["task_id"] for _ in range(3)]
    with redis_full(port):
        refused = client.post("/api/tasks", json=TASK)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"]
        assert "Redis is full" in refused.json["message"]
        assert client.get(f"/api/tasks/{queued[0]}").json["state"] == "PENDING"  # reads still work
        worker = spawn_worker(url)
        try:
            before = oom_refusals(connection)
            wait_until(lambda: oom_refusals(connection) >= before + 2, what="the worker to try twice")
            assert worker.poll() is None, "the worker exited on a full Redis"
            assert {client.get(f"/api/tasks/{i}").json["state"] for i in queued} == {"PENDING"}
        except BaseException:
            stop_worker(worker, kill=True)
            raise
    try:
        wait_until(
            lambda: {client.get(f"/api/tasks/{i}").json["state"] for i in queued} == {"SUCCESS"},
            what="the tasks to run once Redis had room",
        )
    finally:
        stop_worker(worker)


def test_a_failover_finds_the_new_primary_and_a_replica_alone_gets_a_503():
    """The API's connection leads (through a forwarder standing for a DNS name) to the primary A. In the
    failover B takes over, A becomes its replica and the name leads to B: A's READONLY reply makes the client
    reconnect, and the submit lands in B. Led to a replica alone, a submit gets a 503 saying so."""
    require_tool("redis-server", "the test runs two Redis servers of its own")
    a_port, b_port = free_port(), free_port()
    with private_redis(a_port), private_redis(b_port):
        endpoint = TcpProxy("127.0.0.1", a_port)
        url = f"redis://127.0.0.1:{endpoint.port}/0"
        connection = connect(url, socket_timeout_s=2)
        a, b = redis.Redis(port=a_port), redis.Redis(port=b_port)
        try:
            client = create_app(keyed_settings({"REDIS_URL": url}), connection).test_client()
            first = client.post("/api/tasks", json=TASK)
            assert first.status_code == 202
            assert a.exists(f"rq:job:{first.json['task_id']}") == 1

            a.replicaof("127.0.0.1", b_port)  # B is a primary already (it never followed anyone)
            endpoint.upstream = ("127.0.0.1", b_port)
            second = client.post("/api/tasks", json=TASK)
            assert second.status_code == 202, second.json
            assert b.exists(f"rq:job:{second.json['task_id']}") == 1

            endpoint.upstream = ("127.0.0.1", a_port)  # now a replica of B
            endpoint.drop_all()
            refused = client.post("/api/tasks", json=TASK)
            assert refused.status_code == 503
            assert refused.headers["Retry-After"]
            assert "read-only" in refused.json["message"]
        finally:
            endpoint.close()
            for each in (a, b, connection):
                each.close()


def test_a_frozen_redis_costs_one_socket_timeout_then_a_503():
    """SIGSTOP: connections stay open and nothing answers. The API waits one socket timeout and answers 503;
    it does not retry (the command may have run, and four tries of 10 s would outlast API Gateway's 29 s).
    Retries reconnect first, so the forwarder's count of connections tells whether one was made."""
    require_tool("redis-server", "the test freezes a Redis of its own")
    port = free_port()
    with private_redis(port) as server:
        endpoint = TcpProxy("127.0.0.1", port)
        connection = connect(f"redis://127.0.0.1:{endpoint.port}/0", socket_timeout_s=1)
        try:
            client = create_app(keyed_settings({"REDIS_URL": f"redis://127.0.0.1:{endpoint.port}/0"}), connection)
            test_client = client.test_client()
            assert test_client.post("/api/tasks", json=TASK).status_code == 202
            connections = endpoint.accepted
            os.kill(server.pid, signal.SIGSTOP)
            try:
                frozen = test_client.post("/api/tasks", json=TASK)
            finally:
                os.kill(server.pid, signal.SIGCONT)
            assert frozen.status_code == 503
            assert "TimeoutError" in frozen.json["message"]
            assert endpoint.accepted == connections  # no retry: none reconnected
            assert test_client.post("/api/tasks", json=TASK).status_code == 202
        finally:
            endpoint.close()
            connection.close()


def test_a_redis_busy_with_a_long_script_gets_a_503(own_redis):
    """Past its busy-reply-threshold, a running script makes Redis answer every other client BUSY: a 503."""
    port, connection = own_redis
    url = f"redis://127.0.0.1:{port}/0"
    client = create_app(keyed_settings({"REDIS_URL": url}), connection).test_client()
    admin = redis.Redis(port=port)
    admin.config_set("busy-reply-threshold", 100)  # ms (lua-time-limit before Redis 7)
    spinner = threading.Thread(target=spin, args=(port,), daemon=True)
    spinner.start()
    try:
        wait_until(lambda: busy(admin), what="Redis to answer BUSY")
        answer = client.post("/api/tasks", json=TASK)
        assert answer.status_code == 503
        assert "busy running a script" in answer.json["message"]
    finally:
        wait_until(lambda: kill_script(admin), what="the script to be killed")
        spinner.join(timeout=10)
        admin.close()
    assert client.post("/api/tasks", json=TASK).status_code == 202


def spin(port: int) -> None:
    """Run a script that never ends (read-only, so SCRIPT KILL can stop it), until it is killed."""
    client = redis.Redis(port=port)
    with contextlib.suppress(redis.exceptions.RedisError):
        client.eval("while true do end", 0)
    client.close()


def busy(client: redis.Redis) -> bool:
    try:
        client.get("probe")
    except redis.exceptions.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


def kill_script(client: redis.Redis) -> bool:
    try:
        client.script_kill()
    except redis.exceptions.ResponseError as exc:
        return "NOTBUSY" in str(exc)
    return True


def test_an_evicting_redis_is_warned_about_when_a_worker_starts(own_redis):
    """As BullMQ does: a maxmemory-policy other than noeviction deletes tasks when Redis fills up."""
    port, connection = own_redis
    admin = redis.Redis(port=port)
    env = {
        **os.environ,
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "TASKRELAY_TASK_MODULES": "tests.fixture_tasks",
        "PYTHONPATH": str(ROOT),
    }

    def started_worker_log() -> str:
        command = [sys.executable, "-m", "jobs.worker", "--burst"]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True)
        return done.stderr

    try:
        admin.config_set("maxmemory-policy", "allkeys-lru")
        assert eviction_warning(connection) is not None
        assert "maxmemory-policy is allkeys-lru" in started_worker_log()
        admin.config_set("maxmemory-policy", "noeviction")
        assert eviction_warning(connection) is None
        assert "maxmemory-policy" not in started_worker_log()
    finally:
        admin.close()
