"""Submit through an app from many threads at once and count how the ingress grouped them."""

from __future__ import annotations

import threading
from typing import Any

from jobs.queues import TaskRequest


def submit_concurrently(
    app: Any, body: dict[str, Any], threads: int = 24, each: int = 5
) -> tuple[list[str], list[int]]:
    """POST `body` `each` times from `threads` threads started together; return the task ids and flush sizes.

    The flush sizes are read by wrapping the app's ingress group commit: one entry per shared flush.
    """
    ingress = app.extensions["taskrelay"].ingress
    flushes: list[int] = []
    flush = ingress._commits._flush

    def counted(requests: list[TaskRequest]) -> list[BaseException | None]:
        flushes.append(len(requests))
        return flush(requests)

    ingress._commits._flush = counted
    ids: list[str] = []
    start = threading.Barrier(threads)

    def submit() -> None:
        client = app.test_client()
        start.wait()
        for _ in range(each):
            answer = client.post("/api/tasks", json=body)
            assert answer.status_code == 202
            ids.append(answer.json["task_id"])

    workers = [threading.Thread(target=submit) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    return ids, flushes
