"""How the command shows things: one rich console, JSON answers, and the tables of tasks, queues and failures."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

console = Console(highlight=False)

TASK_COLUMNS = ("TASK ID", "STATE", "TYPE", "PRIO", "CREATED", "ENDED")
MIN_WIDTHS = {"TYPE": 6, "ERROR": 10}
QUEUE_STATES = ("queued", "started", "scheduled", "deferred", "failed")
"""The depth columns of the queues table, in the order GET /api/queues names them."""
QUEUE_COLUMNS = ("QUEUE", *(s.upper() for s in QUEUE_STATES), "PAUSED", "WORKERS", "OLDEST (s)", "DONE/MIN")


def show_json(answer: Any) -> None:
    """Print an API answer as indented JSON."""
    console.print_json(data=answer)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _moment(iso: str | None) -> str:
    """Shorten an ISO 8601 UTC time: 'HH:MM:SS' today (UTC), 'MM-DD HH:MM' this year, else 'YYYY-MM-DD HH:MM'."""
    if not iso or len(iso) < 19:
        return _cell(iso)
    now = datetime.now(UTC)
    if iso.startswith(now.strftime("%Y-%m-%d")):
        return iso[11:19]
    return f"{iso[5:10]} {iso[11:16]}" if iso.startswith(now.strftime("%Y-")) else f"{iso[:10]} {iso[11:16]}"


def task_table(
    tasks: list[dict[str, Any]], title: str | None = None, failures: bool = False, width: int | None = None
) -> Table:
    """Return the rows of GET /api/tasks as a table (times in UTC); `failures`: only id, type, end and error.

    Ids, states and times are shown whole, so a narrow terminal (`width`, the
    console's by default) gets fewer columns, not cut values: CREATED goes
    first, then PRIO, then STATE.
    """
    errors = failures or any(task.get("error") for task in tasks)
    columns = ("TASK ID", "TYPE", "ENDED", "ERROR") if failures else (*TASK_COLUMNS, *(("ERROR",) if errors else ()))
    rows = []
    for task in tasks:
        error = task.get("error") or {}
        rows.append(
            {
                "TASK ID": _cell(task.get("task_id")),
                "STATE": _cell(task.get("state")),
                "TYPE": _cell(task.get("task_type")),
                "PRIO": _cell(task.get("priority")),
                "CREATED": _moment(task.get("created_at")),
                "ENDED": _moment(task.get("ended_at")),
                "ERROR": _cell(error.get("message") if isinstance(error, dict) else error),
            }
        )

    def table(shown: tuple[str, ...], hidden: list[str]) -> Table:
        caption = "times in UTC" if tasks else None
        if hidden and caption:
            caption += f"; too narrow for {', '.join(hidden)}"
        made = Table(
            title=title,
            caption=caption,
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            show_edge=False,
            padding=(0, 1),
            collapse_padding=True,
        )
        for column in shown:  # ids, states and times whole; types and errors fold onto more lines
            made.add_column(
                column, no_wrap=column not in ("TYPE", "ERROR"), overflow="fold", min_width=MIN_WIDTHS.get(column)
            )
        return made

    return _fitted(table, rows, columns, ("CREATED", "PRIO", "STATE"), width)


def _fitted(
    table: Callable[[tuple[str, ...], list[str]], Table],
    rows: list[dict[str, str]],
    columns: tuple[str, ...],
    droppable: tuple[str, ...],
    width: int | None,
) -> Table:
    """Return `table(shown, hidden)`, its columns only, filled with `rows` (cells by column): with as many of
    `columns` as fit `width` whole, leaving out `droppable` in order.

    A column that may not wrap needs its widest value; rich would otherwise cut
    values (an id, a count) to make the table fit.
    """

    def filled(shown: tuple[str, ...], hidden: list[str]) -> Table:
        made = table(shown, hidden)
        for row in rows:
            made.add_row(*(row[column] for column in shown))
        return made

    width = console.width if width is None else width
    shown, hidden = list(columns), list[str]()
    made = filled(tuple(shown), hidden)
    for column in droppable:
        if Measurement.get(console, console.options.update_width(10_000), made).minimum <= width:
            break
        if column in shown:
            shown.remove(column)
            hidden.append(column)
            made = filled(tuple(shown), hidden)
    return made


def queue_table(queues: list[dict[str, Any]], width: int | None = None) -> Table:
    """Return GET /api/queues's `queues` as a table: depth by state, workers, oldest age, finished last minute.

    Counts are shown whole: a narrow terminal (`width`, the console's by default)
    gets fewer columns, leaving out SCHEDULED, DEFERRED, DONE/MIN and OLDEST (s) in that order.
    """
    rows = []
    for queue in queues:
        depth = queue.get("depth") or {}
        oldest = queue.get("oldest_queued_age_s")
        values = (
            _cell(queue.get("name")),
            *(_cell(depth.get(state, 0)) for state in QUEUE_STATES),
            "yes" if queue.get("paused") else "no",
            _cell(queue.get("workers")),
            "" if oldest is None else f"{oldest:.1f}",
            _cell(queue.get("finished_last_minute")),
        )
        rows.append(dict(zip(QUEUE_COLUMNS, values, strict=True)))

    def table(shown: tuple[str, ...], hidden: list[str]) -> Table:
        made = Table(title="Queues", caption=f"too narrow for {', '.join(hidden)}" if hidden else None)
        for column in shown:
            made.add_column(
                column,
                justify="left" if column in ("QUEUE", "PAUSED") else "right",
                no_wrap=True,
                min_width=len("normal_priority") if column == "QUEUE" else None,
            )
        return made

    return _fitted(table, rows, QUEUE_COLUMNS, ("SCHEDULED", "DEFERRED", "DONE/MIN", "OLDEST (s)"), width)


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
