"""`taskrelay queues` (GET /api/queues, pause, resume, empty) and `taskrelay watch`, the live view."""

from __future__ import annotations

import time
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from cli.client import ApiRefused, Client, CliError
from cli.output import console, depth_table, queue_table, show_json, task_table

LAST_FAILURES = 5
"""How many of the newest FAILURE tasks `watch` shows."""


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON instead of a table.")
@click.pass_context
def queues(ctx: click.Context, as_json: bool) -> None:
    """Show every queue's depth by state, workers, oldest task and throughput (GET /api/queues)."""
    if ctx.invoked_subcommand is not None:
        return
    answer = ctx.obj.get("/api/queues")
    if as_json:
        show_json(answer)
    else:
        console.print(queue_table(answer["queues"]))


def _queue_action(action: str, doc: str) -> click.Command:
    @click.command(name=action, help=doc)
    @click.argument("name")
    @click.pass_obj
    def run(client: Client, name: str) -> None:
        answer = client.post(f"/api/queues/{name}/{action}")
        show_json(answer)

    return run


queues.add_command(_queue_action("pause", "Stop workers taking tasks from queue NAME; running ones finish."))
queues.add_command(_queue_action("resume", "Let workers take tasks from queue NAME again."))
queues.add_command(_queue_action("empty", "Drop every queued task of queue NAME (admin key)."))


def snapshot(client: Client) -> RenderableType:
    """Return one frame of `watch`: queues (GET /api/queues, else /api/health), workers and the last failures."""
    parts: list[RenderableType] = []
    try:
        status, answer = client.send("GET", "/api/queues")
        if status == 200 and isinstance(answer, dict) and "queues" in answer:
            parts.append(queue_table(answer["queues"]))
            workers = _workers(answer)
        else:
            health = client.request("GET", "/api/health")
            parts.append(depth_table(health.get("queues", {})))
            workers = health.get("workers", 0)
        failures = client.get("/api/tasks", {"state": "FAILURE", "limit": LAST_FAILURES})
    except ApiRefused as exc:
        return Text(f"{_now()}  the API refused: {exc}", style="red")
    parts.append(Text(f"workers: {workers}"))
    parts.append(task_table(failures["tasks"], title=f"Last failures ({failures['total']} in all)", failures=True))
    parts.append(Text(f"{client.url}  updated {_now()}  (Ctrl-C to stop)", style="dim"))
    return Group(*parts)


def _workers(answer: dict[str, Any]) -> int:
    """Return how many workers listen on the busiest-served queue (every worker listens on every task queue)."""
    return max((q.get("workers") or 0 for q in answer.get("queues", [])), default=0)


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


@click.command()
@click.option(
    "--interval", type=click.FloatRange(min=0), default=1.0, show_default=True, help="Seconds between refreshes."
)
@click.option("--count", type=click.IntRange(1), help="Stop after this many refreshes (default: until Ctrl-C).")
@click.pass_obj
def watch(client: Client, interval: float, count: int | None) -> None:
    """A live view of queue depths, workers and the last failures, refreshed in place.

    Off a terminal (a pipe, a log) each refresh is printed below the last instead.
    """
    frame = snapshot(client)  # an API that is down or a bad key ends here, with exit 2, before drawing anything
    shown = 1
    try:
        with Live(frame, console=console, auto_refresh=False) if console.is_terminal else nullcontext() as live:
            if live is None:
                console.print(frame)
            while count is None or shown < count:
                time.sleep(interval)
                try:
                    frame = snapshot(client)
                except CliError as exc:  # keep watching through a restart of the API
                    frame = Text(f"{_now()}  {exc}", style="red")
                if live is None:
                    console.print(frame)
                else:
                    live.update(frame, refresh=True)
                shown += 1
    except KeyboardInterrupt:
        pass
