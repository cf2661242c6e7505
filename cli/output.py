"""How the command shows things: one rich console, JSON answers, and the tables of tasks, queues and failures."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)

QUEUE_STATES = ("queued", "started", "scheduled", "deferred", "failed")
"""The depth columns of the queues table, in the order GET /api/queues names them."""


def show_json(answer: Any) -> None:
    """Print an API answer as indented JSON."""
    console.print_json(data=answer)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def task_table(tasks: list[dict[str, Any]], title: str | None = None) -> Table:
    """Return the rows of GET /api/tasks as a table."""
    table = Table(title=title)
    for column in ("TASK ID", "STATE", "TYPE", "PRIORITY", "QUEUE", "CREATED", "ENDED", "ERROR"):
        table.add_column(column, overflow="fold")
    for task in tasks:
        error = task.get("error") or {}
        table.add_row(
            _cell(task.get("task_id")),
            _cell(task.get("state")),
            _cell(task.get("task_type")),
            _cell(task.get("priority")),
            _cell(task.get("queue")),
            _cell(task.get("created_at")),
            _cell(task.get("ended_at")),
            _cell(error.get("message") if isinstance(error, dict) else error),
        )
    return table


def queue_table(queues: list[dict[str, Any]]) -> Table:
    """Return GET /api/queues's `queues` as a table: depth by state, workers, oldest age, finished last minute."""
    table = Table(title="Queues")
    for column in ("QUEUE", "PAUSED", *(s.upper() for s in QUEUE_STATES), "WORKERS", "OLDEST (s)", "DONE/MIN"):
        table.add_column(column, justify="left" if column in ("QUEUE", "PAUSED") else "right")
    for queue in queues:
        depth = queue.get("depth") or {}
        oldest = queue.get("oldest_queued_age_s")
        table.add_row(
            _cell(queue.get("name")),
            "yes" if queue.get("paused") else "no",
            *(_cell(depth.get(state, 0)) for state in QUEUE_STATES),
            _cell(queue.get("workers")),
            "" if oldest is None else f"{oldest:.1f}",
            _cell(queue.get("finished_last_minute")),
        )
    return table


def depth_table(depths: dict[str, int]) -> Table:
    """Return GET /api/health's `queues` (queued tasks per queue) as a table."""
    table = Table(title="Queues")
    table.add_column("QUEUE")
    table.add_column("QUEUED", justify="right")
    for name, depth in depths.items():
        table.add_row(name, str(depth))
    return table
