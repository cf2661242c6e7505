"""Retries with back-off, per-attempt errors, non-retryable failures and failure notifications."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from rq import Queue
from rq.scheduler import RQScheduler

from core.logs import JsonFormatter
from core.storage.enqueue import backoff_intervals
from core.storage.queues import SERIALIZER
from jobs import notify
from tests.helpers import submit
from tests.smtp_server import smtp_server  # noqa: F401


def test_backoff_grows_exponentially_with_jitter():
    delays = backoff_intervals(6, base_s=2, cap_s=40)
    assert len(delays) == 6
    for n, delay in enumerate(delays):
        expected = min(40, 2 * 2**n)
        assert 0.5 * expected - 1 <= delay <= 1.5 * expected + 1
    assert len({tuple(backoff_intervals(6, 2, 40)) for _ in range(20)}) > 1  # jitter varies


def test_failed_attempt_is_retried_and_shows_retry_state(client, drain, fake_redis, monkeypatch):
    monkeypatch.setattr("core.storage.enqueue.backoff_intervals", lambda n, base, cap: [60] * n)
    task_id = submit(client, "test_flaky", {"succeed_on": 2})
    drain()
    between = client.get(f"/api/tasks/{task_id}").json
    assert between["state"] == "RETRY"
    assert between["status"]["status"] == "retrying"
    assert between["status"]["attempts"] == 1
    [error] = between["status"]["errors"]
    assert error["type"] == "RuntimeError"
    assert error["message"] == "planned failure on attempt 1"
    assert error["attempt"] == 1 and error["at"]
    assert client.get("/api/tasks?state=RETRY").json["total"] == 1
    assert client.get("/api/tasks?state=PENDING").json["total"] == 0

    # Make the back-off due now and let RQ's scheduler move it back to its queue.
    scheduled_key = Queue("normal_priority", connection=fake_redis).scheduled_job_registry.key
    fake_redis.zadd(scheduled_key, {task_id: 0})
    scheduler = RQScheduler(["normal_priority"], connection=fake_redis, serializer=SERIALIZER)
    scheduler.acquire_locks()
    scheduler.enqueue_scheduled_jobs()
    scheduler.release_locks()
    drain()
    done = client.get(f"/api/tasks/{task_id}").json
    assert done["state"] == "SUCCESS"
    assert done["status"]["result"] == {"succeeded_on": 2}
    assert len(done["status"]["errors"]) == 1


def test_last_attempt_ends_in_failure_with_every_error(client, drain):
    task_id = submit(client, "test_flaky", {"succeed_on": 99}, max_retries=2)
    drain()
    status = client.get(f"/api/tasks/{task_id}").json
    assert status["state"] == "FAILURE"
    assert status["status"]["attempts"] == 3
    assert [e["attempt"] for e in status["status"]["errors"]] == [1, 2, 3]
    assert status["status"]["error"] == {"type": "RuntimeError", "message": "planned failure on attempt 3"}
    assert "Traceback" not in json.dumps(status)


def test_bad_input_fails_at_once_without_retries(client, drain):
    task_id = submit(client, "test_bad_input")
    drain()
    status = client.get(f"/api/tasks/{task_id}").json
    assert status["state"] == "FAILURE"
    assert status["status"]["attempts"] == 1
    assert status["status"]["error"] == {"type": "TaskInputError", "message": "value must be positive"}


class Receiver:
    """A real local HTTP server that records POSTs and answers with queued status codes."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                self.send_response(receiver.answers.pop(0) if receiver.answers else 200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def test_final_failure_posts_a_signed_webhook_once(client, drain, receiver, monkeypatch):
    monkeypatch.setenv("FAILURE_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "true")  # the receiver listens on loopback
    monkeypatch.setenv("FAILURE_WEBHOOK_SECRET", "s3cret")
    monkeypatch.setattr(notify, "WEBHOOK_BACKOFF_S", 0.01)
    receiver.answers = [503]  # the first delivery fails; the retry must get through
    task_id = submit(client, "test_flaky", {"succeed_on": 99}, max_retries=1)
    drain()
    assert len(receiver.requests) == 2
    headers, body = receiver.requests[-1]
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert headers["X-Taskrelay-Signature"] == expected
    payload = json.loads(body)
    assert payload["event"] == "task.failed"
    assert payload["task_id"] == task_id
    assert payload["attempts"] == 2
    assert payload["error"] == {"type": "RuntimeError", "message": "planned failure on attempt 2"}


def test_webhook_gives_up_on_4xx(receiver, monkeypatch):
    monkeypatch.setattr(notify, "WEBHOOK_BACKOFF_S", 0.01)
    receiver.answers = [400, 200]
    assert notify.post_webhook(receiver.url, {"x": 1}, "", attempts=3, allow_private=True) is False
    assert len(receiver.requests) == 1


def test_a_webhook_to_loopback_is_refused_without_allow_private_urls(client, drain, receiver, monkeypatch, caplog):
    monkeypatch.setenv("FAILURE_WEBHOOK_URL", receiver.url)
    submit(client, "test_bad_input")
    drain()
    assert receiver.requests == []
    assert "resolves to 127.0.0.1, an internal address; set ALLOW_PRIVATE_URLS=true" in caplog.text


def test_no_webhook_while_retries_remain(client, drain, receiver, monkeypatch):
    monkeypatch.setenv("FAILURE_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("ALLOW_PRIVATE_URLS", "true")
    submit(client, "test_flaky", {"succeed_on": 2})
    drain()
    assert receiver.requests == []


def test_final_failure_sends_an_email(client, drain, smtp_server, monkeypatch):  # noqa: F811
    monkeypatch.setenv("SMTP_HOST", smtp_server.host)
    monkeypatch.setenv("SMTP_PORT", str(smtp_server.port))
    monkeypatch.setenv("FAILURE_EMAIL_TO", "ops@example.com")
    task_id = submit(client, "test_bad_input")
    drain()
    [message] = smtp_server.messages
    assert message.rcpt_tos == ["ops@example.com"]
    assert task_id in message.message["Subject"]
    assert "value must be positive" in message.message.get_content()


def test_worker_logs_are_json_with_task_context(client, drain, caplog):
    task_id = submit(client, "data_processing", {"data": [1, 2]})
    with caplog.at_level(logging.INFO, logger="taskrelay.worker"):
        drain()
    records = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "taskrelay.worker"]
    succeeded = next(r for r in records if r["msg"] == "task succeeded")
    assert succeeded["task_id"] == task_id
    assert succeeded["task_type"] == "data_processing"
    assert succeeded["queue"] == "normal_priority"
    assert succeeded["attempt"] == 1
    assert succeeded["duration_ms"] >= 0
