"""TLS to both servers: rediss:// to a TLS-only Redis this test starts, amqps:// through a TLS front (socat) to
the machine's RabbitMQ; self-signed certificates made by openssl."""

from __future__ import annotations

import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
import redis

from app import create_app
from tests.conftest import require_tool
from tests.helpers import keyed_settings, wait_until
from tests.processes import free_port, spawn_worker, stop_worker

pytestmark = [pytest.mark.redis]


def _require(*tools: str) -> None:
    for tool in tools:
        require_tool(tool, "this TLS test needs it")


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    _require("openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_redis_url(tmp_path: Path, certificate: tuple[Path, Path]) -> Iterator[str]:
    """Start redis-server with TLS only on a free port; yield its rediss:// URL (trusting the test's CA)."""
    _require("redis-server")
    cert, key = certificate
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={cert}"
    try:

        def up() -> bool:
            if server.poll() is not None:
                output = server.stdout.read().decode() if server.stdout else ""
                pytest.skip(f"this redis-server cannot serve TLS: {output.strip()[-300:]}")
            try:
                return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
            except redis.exceptions.ConnectionError:
                return False

        wait_until(up, 20, "the TLS Redis to answer")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)
        if server.stdout:
            server.stdout.close()


def test_the_api_and_a_worker_run_a_task_over_rediss(tls_redis_url):
    with pytest.raises(redis.exceptions.ConnectionError):  # the port speaks TLS only
        redis.Redis.from_url(tls_redis_url.replace("rediss://", "redis://").split("?")[0], socket_timeout=2).ping()
    connection = redis.Redis.from_url(tls_redis_url)
    client = create_app(keyed_settings({"REDIS_URL": tls_redis_url}), connection).test_client()
    assert client.get("/api/health").json["redis"] == "ok"
    answer = client.post("/api/tasks", json={"task_type": "test_echo", "parameters": {"over": "tls"}})
    assert answer.status_code == 202, answer.json
    worker = spawn_worker(tls_redis_url)
    try:
        done = wait_until(
            lambda: (s := client.get(f"/api/tasks/{answer.json['task_id']}").json)["state"] == "SUCCESS" and s,
            30,
            "the task to run over TLS",
        )
    finally:
        stop_worker(worker)
    assert done["status"]["result"] == {"echo": {"over": "tls"}}


@pytest.fixture
def amqps_url(rabbitmq_url: str, certificate: tuple[Path, Path]) -> Iterator[str]:
    """A TLS front on a free port forwarding to the machine's RabbitMQ; yield its amqps:// URL."""
    _require("socat")
    cert, key = certificate
    port = free_port()
    upstream = urlparse(rabbitmq_url)
    front = subprocess.Popen(
        ["socat", f"OPENSSL-LISTEN:{port},bind=127.0.0.1,cert={cert},key={key},verify=0,reuseaddr,fork",
         f"TCP:{upstream.hostname or '127.0.0.1'}:{upstream.port or 5672}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    options = quote(str({"ca_certs": str(cert), "server_hostname": "127.0.0.1"}))
    credentials = f"{upstream.username or 'guest'}:{upstream.password or 'guest'}"
    try:
        wait_until(lambda: _listening(port), 10, "the TLS front to listen")
        yield f"amqps://{credentials}@127.0.0.1:{port}/%2F?ssl_options={options}"
    finally:
        front.terminate()
        front.wait(timeout=10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.rabbitmq
def test_a_task_travels_over_amqps_through_the_bridge(redis_url, real_redis, amqps_url, ingress_queue):
    from bridge.service import Bridge
    from core.connection import connect

    settings = keyed_settings(
        {"REDIS_URL": redis_url, "RABBITMQ_URL": amqps_url, "INGRESS_QUEUE": ingress_queue,
         "TASKRELAY_TASK_MODULES": "tests.fixture_tasks"}
    )  # fmt: skip
    app = create_app(settings, real_redis)
    try:
        answer = app.test_client().post("/api/tasks", json={"task_type": "test_echo", "parameters": {"over": "amqps"}})
        assert answer.status_code == 202, answer.json
        bridge = Bridge(settings, connect(redis_url, socket_timeout_s=5))
        thread = threading.Thread(target=bridge.run, daemon=True)
        thread.start()
        try:
            wait_until(lambda: real_redis.exists(f"rq:job:{answer.json['task_id']}") == 1, 30, "the bridge over amqps")
        finally:
            bridge.stop()
            thread.join(timeout=15)
    finally:
        app.extensions["taskrelay"].ingress.close()
