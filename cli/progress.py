"""`--wait`: poll a task or a workflow and show a live progress bar until it ends; fail unless it succeeded."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

from cli.client import Client, CliError
from cli.output import console

ENDED = ("SUCCESS", "FAILURE", "REVOKED")
"""States after which nothing changes (a task's and a workflow's alike)."""


class DidNotSucceed(CliError):
    """The task or workflow waited on ended FAILURE or REVOKED."""


def _task_progress(answer: dict[str, Any]) -> tuple[float | None, float | None, str]:
    """Return (done, total, text) from a task's status.progress (None, None when it reported none)."""
    progress = (answer.get("status") or {}).get("progress") or {}
    return progress.get("done"), progress.get("total"), progress.get("message") or ""


def _workflow_progress(answer: dict[str, Any]) -> tuple[float | None, float | None, str]:
    """Return (steps done, steps in all, text) from a workflow's progress."""
    progress = answer.get("progress") or {}
    return progress.get("done"), progress.get("total"), "steps"


def watch_until_ended(
    what: str,
    fetch: Callable[[], dict[str, Any]],
    read: Callable[[dict[str, Any]], tuple[float | None, float | None, str]],
    interval_s: float,
) -> dict[str, Any]:
    """Poll `fetch` every `interval_s` seconds until its state is one of ENDED, showing its progress; return it.

    On a terminal, a live bar; anywhere else (a pipe, a CI log), one line each time the progress changes.
    """
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn())
    last_line = None
    with Progress(*columns, TimeElapsedColumn(), console=console, disable=not console.is_terminal) as bar:
        row = bar.add_task(what, total=None)
        while True:
            answer = fetch()
            done, total, text = read(answer)
            state = answer.get("state", "?")
            if state == "SUCCESS" and total:
                done = total
            description = f"{what} {state}" + (f" {text}" if text else "")
            bar.update(row, description=description, total=total or None, completed=done or 0)
            line = description + (f" {done:g}/{total:g} ({100.0 * (done or 0) / total:.0f}%)" if total else "")
            if not console.is_terminal and line != last_line:
                console.print(line)
                last_line = line
            if state in ENDED:
                return answer
            time.sleep(interval_s)


def _finish(what: str, answer: dict[str, Any], error: Any) -> None:
    state = answer.get("state")
    if state == "SUCCESS":
        if console.is_terminal:  # elsewhere the last progress line said it
            console.print(f"{what} SUCCESS")
        return
    message = error.get("message") if isinstance(error, dict) else None
    raise DidNotSucceed(f"{what} ended {state}" + (f": {message}" if message else ""))


def wait_for_task(client: Client, task_id: str, interval_s: float) -> dict[str, Any]:
    """Wait for a task with a progress bar fed by its reported progress; DidNotSucceed unless SUCCESS."""
    answer = watch_until_ended(
        f"task {task_id}", lambda: client.get(f"/api/tasks/{task_id}"), _task_progress, interval_s
    )
    _finish(f"task {task_id}", answer, (answer.get("status") or {}).get("error"))
    return answer


def wait_for_workflow(client: Client, workflow_id: str, interval_s: float) -> dict[str, Any]:
    """Wait for a workflow with a progress bar of steps done/total; DidNotSucceed unless SUCCESS."""
    answer = watch_until_ended(
        f"workflow {workflow_id}", lambda: client.get(f"/api/workflows/{workflow_id}"), _workflow_progress, interval_s
    )
    failed = [f"{step_id}: {entry.get('state')}" for step_id, entry in (answer.get("steps") or {}).items()]
    failed = [line for line in failed if not line.endswith("SUCCESS")]
    _finish(f"workflow {workflow_id}", answer, {"message": ", ".join(failed)} if failed else None)
    return answer
