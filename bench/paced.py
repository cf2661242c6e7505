"""A paced submit load: task n is POSTed at start + n / rate from a few keep-alive connections, 127.0.0.1 only.

Bounded twice: at most `count` tasks, and nothing is sent after the deadline.
A 429 or 503 is resent after its Retry-After (at most 2 s); a lost connection
is reopened and the task resent. Accepted task ids are appended in order to
`Submitted.accepted`, which another thread may read while the load runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.load import post_request, read_response

HOST = "127.0.0.1"
RETRY_CAP_S = 2.0
"""Longest pause before resending a task answered 429 or 503, in seconds."""


@dataclass
class Submitted:
    """What the paced load sent and was answered."""

    accepted: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    connection_errors: int = 0
    rejected: list[str] = field(default_factory=list)
    """Answers other than 202, 429 and 503 (the task is not resent), as "status: body", or unreadable ones."""
    unsent: int = 0
    """Tasks the deadline came before."""
    most_behind_s: float = 0.0
    """Longest a task was sent after its scheduled time, in seconds (the load fell behind the rate)."""
    seconds: float = 0.0


class _Schedule:
    """Hand out task numbers to the connections, in order, with the time each is due."""

    def __init__(self, count: int, rate: float, deadline_s: float) -> None:
        self.count, self.rate, self.next = count, rate, 0
        self.started = time.monotonic()
        self.deadline = self.started + deadline_s

    def take(self) -> tuple[int, float] | None:
        if self.next >= self.count:
            return None
        number, self.next = self.next, self.next + 1
        return number, self.started + number / self.rate


async def _connection(port: int, schedule: _Schedule, body_of: Callable[[int], bytes], out: Submitted) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while (turn := schedule.take()) is not None:
        number, due = turn
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        out.most_behind_s = max(out.most_behind_s, time.monotonic() - due)
        request = post_request(HOST, "/api/tasks", body_of(number))
        while True:
            if time.monotonic() > schedule.deadline:
                out.unsent += 1
                break
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(HOST, port)
                assert reader is not None
                writer.write(request)
                status, headers, body = await read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                if writer is not None:
                    writer.close()
                reader = writer = None
                if isinstance(exc, ValueError):  # an answer that is not HTTP: say so; the next task reconnects
                    out.rejected.append(f"unreadable answer: {exc!r}")
                    break
                out.connection_errors += 1
                await asyncio.sleep(0.1)
                continue
            out.statuses[status] += 1
            if status == 202:
                out.accepted.append(json.loads(body)["task_id"])
                break
            if status in (429, 503):
                await asyncio.sleep(min(float(headers.get(b"retry-after", b"1")), RETRY_CAP_S))
                continue
            out.rejected.append(f"{status}: {body[:200]!r}")
            break
    if writer is not None:
        writer.close()


def submit_paced(
    port: int, count: int, seconds: float, body_of: Callable[[int], bytes], out: Submitted, connections: int = 8
) -> None:
    """POST `count` tasks evenly over `seconds` to the API on `port`; stop sending `seconds` + 60 s in at the latest.

    `body_of(n)` is task n's JSON body. Fills `out` as answers come.
    """
    schedule = _Schedule(count, count / seconds, seconds + 60)

    async def main() -> None:
        await asyncio.gather(*(_connection(port, schedule, body_of, out) for _ in range(connections)))

    asyncio.run(main())
    out.seconds = time.monotonic() - schedule.started
