"""Helpers every test file shares: submitting through a test client, waiting on a condition, concurrent submits.

Waits poll a condition with a deadline; none sleeps to order events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask.testing import FlaskClient

from core.model import TaskRequest
from core.settings import Settings

T = TypeVar("T")

DEFAULT_PARAMETERS: dict[str, dict[str, Any]] = {"data_processing": {"data": [1, 2, 3]}}
"""What `submit` sends when no parameters are given: valid ones for task types that require some."""
POLL_S = 0.02
"""How often `wait_until` checks its condition, in seconds."""
TEST_API_KEY = "tr_test_bootstrap_key_for_the_test_suite_only_0000"
"""The admin key every test app and spawned API accepts (TASKRELAY_BOOTSTRAP_KEY) and every test client sends."""
KEY_HEADER = {"X-API-Key": TEST_API_KEY}


class KeyedClient(FlaskClient):
    """A Flask test client that sends `api_key` (TEST_API_KEY unless changed; None: no key) unless told otherwise."""

    api_key: str | None = TEST_API_KEY

    def open(self, *args: Any, **kwargs: Any) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        if self.api_key and not any(h.lower() in ("authorization", "x-api-key") for h in headers):
            headers["X-API-Key"] = self.api_key
        return super().open(*args, headers=headers, **kwargs)


def keyed_settings(env: dict[str, str]) -> Settings:
    """Return Settings.from_env(env) with TEST_API_KEY as TASKRELAY_BOOTSTRAP_KEY (unless `env` sets one)."""
    return Settings.from_env({"TASKRELAY_BOOTSTRAP_KEY": TEST_API_KEY, **env})


def submit(client: Any, task_type: str = "data_processing", parameters: dict | None = None, **extra: Any) -> str:
    """POST one task through a Flask test client (`extra`: priority, delay_seconds, max_retries...); return its id."""
    body = {"task_type": task_type, "parameters": DEFAULT_PARAMETERS.get(task_type, {}), **extra}
    if parameters is not None:
        body["parameters"] = parameters
    response = client.post("/api/tasks", json=body)
    assert response.status_code == 202, response.json
    return response.json["task_id"]


def wait_until(check: Callable[[], T | None], timeout: float = 20.0, what: str = "the condition") -> T:
    """Poll `check()` until it returns something other than None or False; return that, or fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while (value := check()) is None or value is False:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_S)
    return value


def submit_concurrently(
    app: Any, body: dict[str, Any], threads: int = 24, each: int = 5
) -> tuple[list[str], list[int]]:
    """POST `body` `each` times from `threads` threads started together; return the task ids and flush sizes.

    The flush sizes come from the ingress's group commit (`commits.observe`): one entry per shared flush.
    """
    flushes: list[int] = []

    def count(requests: list[TaskRequest]) -> None:
        flushes.append(len(requests))

    app.extensions["taskrelay"].ingress.commits.observe(count)
    ids: list[str] = []
    start = threading.Barrier(threads)

    def post_all() -> None:
        client = app.test_client()
        start.wait()
        for _ in range(each):
            answer = client.post("/api/tasks", json=body)
            assert answer.status_code == 202
            ids.append(answer.json["task_id"])

    workers = [threading.Thread(target=post_all) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return ids, flushes


def round_trips(connection: Any) -> list[str]:
    """Record, from now on, each command `connection` sends on its own and each pipeline it sends (one entry per
    round trip)."""
    sent: list[str] = []
    execute_command, pipeline = connection.execute_command, connection.pipeline

    def command(*args: Any, **kwargs: Any) -> Any:
        sent.append(str(args[0]))
        return execute_command(*args, **kwargs)

    def recorded_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = pipeline(*args, **kwargs)
        execute = pipe.execute

        def recorded_execute(*a: Any, **kw: Any) -> Any:
            sent.append("pipeline")
            return execute(*a, **kw)

        pipe.execute = recorded_execute
        return pipe

    connection.execute_command, connection.pipeline = command, recorded_pipeline
    return sent


class PipelineCount:
    """Counts the pipelines opened on `connection` (one per round trip a flush makes) by wrapping its `pipeline`."""

    def __init__(self, connection: Any) -> None:
        self.count = 0
        opened = connection.pipeline

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return opened(*args, **kwargs)

        connection.pipeline = counted


class Published:
    """Stands in for the publisher's `publish_many`: records the ids of what would have gone to RabbitMQ."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def __call__(self, messages: Sequence[Any]) -> list[str | None]:
        self.ids.extend(m.message_id for m in messages)
        return [None] * len(messages)
