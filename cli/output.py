"""How the command shows things: one rich console, JSON answers, and the tables of tasks, queues and failures."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

console = Console(highlight=False)

TASK_COLUMNS = ("TASK ID", "STATE", "TYPE", "PRIO", "CREATED", "ENDED")
MIN_WIDTHS = {"TYPE": 6, "ERROR": 10}
QUEUE_STATES = ("queued", "started", "scheduled", "deferred", "failed")
"""The depth columns of the queues table, in the order GET /api/queues names them."""


def show_json(answer: Any) -> None:
    """Print an API answer as indented JSON."""
    console.print_json(data=answer)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _moment(iso: str | None) -> str:
    """Shorten an ISO 8601 UTC time: 'HH:MM:SS' if it is today (UTC), else 'YYYY-MM-DD HH:MM'."""
    if not iso or len(iso) < 19:
        return _cell(iso)
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    return iso[11:19] if iso.startswith(today) else f"{iso[:10]} {iso[11:16]}"


def task_table(tasks: list[dict[str, Any]], title: str | None = None, failures: bool = False) -> Table:
    """Return the rows of GET /api/tasks as a table (times in UTC); `failures`: only id, type, end and error."""
    errors = failures or any(task.get("error") for task in tasks)
    columns = ("TASK ID", "TYPE", "ENDED", "ERROR") if failures else (*TASK_COLUMNS, *(("ERROR",) if errors else ()))
    table = Table(
        title=title,
        caption="times in UTC" if tasks else None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for column in columns:  # ids, states and times whole; types and errors fold onto more lines
        table.add_column(
            column, no_wrap=column not in ("TYPE", "ERROR"), overflow="fold", min_width=MIN_WIDTHS.get(column)
        )
    for task in tasks:
        error = task.get("error") or {}
        cells = {
            "TASK ID": _cell(task.get("task_id")),
            "STATE": _cell(task.get("state")),
            "TYPE": _cell(task.get("task_type")),
            "PRIO": _cell(task.get("priority")),
            "CREATED": _moment(task.get("created_at")),
            "ENDED": _moment(task.get("ended_at")),
            "ERROR": _cell(error.get("message") if isinstance(error, dict) else error),
        }
        table.add_row(*(cells[column] for column in columns))
    return table


def queue_table(queues: list[dict[str, Any]]) -> Table:
    """Return GET /api/queues's `queues` as a table: depth by state, workers, oldest age, finished last minute."""
    table = Table(title="Queues")
    table.add_column("QUEUE", no_wrap=True, min_width=len("normal_priority"))
    for column in (*(s.upper() for s in QUEUE_STATES), "PAUSED", "WORKERS", "OLDEST (s)", "DONE/MIN"):
        table.add_column(column, justify="left" if column == "PAUSED" else "right")
    for queue in queues:
        depth = queue.get("depth") or {}
        oldest = queue.get("oldest_queued_age_s")
        table.add_row(
            _cell(queue.get("name")),
            *(_cell(depth.get(state, 0)) for state in QUEUE_STATES),
            "yes" if queue.get("paused") else "no",
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


def key_table(keys: list[dict[str, Any]]) -> Table:
    """Return GET /api/keys's `keys` as a table: id, name, scopes, created, last used (times in UTC)."""
    table = Table(title="API keys", caption="times in UTC" if keys else None)
    for column in ("ID", "NAME", "SCOPES", "CREATED", "LAST USED"):
        table.add_column(column, no_wrap=column != "NAME", overflow="fold")
    for key in keys:
        table.add_row(
            key["id"],
            key["name"],
            ",".join(key["scopes"]),
            _moment(key.get("created_at")),
            _moment(key.get("last_used_at")) or "never",
        )
    return table
