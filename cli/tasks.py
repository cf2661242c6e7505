"""Task commands: submit, status, list, cancel, retry, purge (POST/GET /api/tasks...)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from cli.client import Client, CliError
from cli.output import console, show_json, task_table
from cli.progress import wait_for_task

PRIORITIES = ("high", "normal", "low")
STATES = ("PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED")
LIST_TYPES = ("active", "reserved", "scheduled", "completed")


def read_json_file(path: Path) -> Any:
    """Return the JSON in `path`; a file that is not JSON is a CliError naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read JSON from {path}: {exc}") from None


def _param(text: str) -> tuple[str, Any]:
    """Split `k=v`; v is taken as JSON when it parses (3, true, [1,2]) and as a string otherwise."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{text!r} is not of the form key=value", param_hint="--param")
    try:
        return name, json.loads(raw)
    except ValueError:
        return name, raw


def submit_body(
    body_file: Path | None,
    task_type: str | None,
    params: tuple[str, ...],
    params_json: str | None,
    priority: str | None,
    delay: float | None,
    max_retries: int | None,
) -> dict[str, Any]:
    """Build POST /api/tasks's body: the file's (if any), then each flag given on top of it."""
    body: dict[str, Any] = read_json_file(body_file) if body_file else {}
    if not isinstance(body, dict):
        raise CliError(f"{body_file} must hold a JSON object (a task: task_type, parameters, priority...)")
    parameters = dict(body.get("parameters") or {})
    if params_json is not None:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--params") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--params")
        parameters.update(loaded)
    parameters.update(_param(text) for text in params)
    given = {"task_type": task_type, "priority": priority, "delay_seconds": delay, "max_retries": max_retries}
    body.update({key: value for key, value in given.items() if value is not None})
    if parameters:
        body["parameters"] = parameters
    if "task_type" not in body:
        raise click.UsageError("give --type (or a --file whose JSON has task_type)")
    return body


@click.command()
@click.option("--type", "task_type", help="A registered task type (GET /api/task-types), e.g. data_processing.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="One parameter; VALUE is JSON or text.")
@click.option("--params", "params_json", metavar="JSON", help="The parameters as a JSON object.")
@click.option("--priority", type=click.Choice(PRIORITIES), help="Default: normal.")
@click.option("--delay", type=click.FloatRange(min=0), help="Run after this many seconds.")
@click.option("--max-retries", type=int, help="Retries after a failed attempt (default: the task type's).")
@click.option("--file", "body_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="A JSON body.")
@click.option("--wait", is_flag=True, help="Show a progress bar until the task ends; exit 1 unless it succeeds.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Seconds between polls with --wait.",
)
@click.option("-q", "--quiet", is_flag=True, help="Print only the task id.")
@click.pass_obj
def submit(
    client: Client,
    task_type: str | None,
    params: tuple[str, ...],
    params_json: str | None,
    priority: str | None,
    delay: float | None,
    max_retries: int | None,
    body_file: Path | None,
    wait: bool,
    interval: float,
    quiet: bool,
) -> None:
    """Submit a task: flags, or a JSON --file (flags override its fields)."""
    body = submit_body(body_file, task_type, params, params_json, priority, delay, max_retries)
    answer = client.post("/api/tasks", body)
    if quiet:
        click.echo(answer["task_id"])
    else:
        console.print(f"submitted {answer['task_id']} to {answer.get('queue')}")
    if wait:
        wait_for_task(client, answer["task_id"], interval)


@click.command()
@click.argument("task_id")
@click.option("--wait", is_flag=True, help="Show a progress bar until the task ends; exit 1 unless it succeeds.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Seconds between polls with --wait.",
)
@click.pass_obj
def status(client: Client, task_id: str, wait: bool, interval: float) -> None:
    """Show a task's state and status (GET /api/tasks/<id>)."""
    if wait:
        wait_for_task(client, task_id, interval)
    else:
        show_json(client.get(f"/api/tasks/{task_id}"))


@click.command(name="list")
@click.option("--state", type=click.Choice(STATES, case_sensitive=False))
@click.option("--type", "list_type", type=click.Choice(LIST_TYPES), help="active, reserved, scheduled or completed.")
@click.option("--task-type", help="Only tasks of this registered type.")
@click.option("--priority", type=click.Choice(PRIORITIES))
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON instead of a table.")
@click.pass_obj
def list_tasks(
    client: Client,
    state: str | None,
    list_type: str | None,
    task_type: str | None,
    priority: str | None,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List tasks as a table, with the API's filters (GET /api/tasks)."""
    query = {"state": state, "type": list_type, "task_type": task_type, "priority": priority}
    answer = client.get("/api/tasks", {**query, "limit": limit, "offset": offset})
    if as_json:
        show_json(answer)
        return
    console.print(task_table(answer["tasks"]))
    exact = "" if answer.get("total_exact", True) else " (at most)"
    console.print(f"{len(answer['tasks'])} shown of {answer['total']}{exact} from offset {answer['offset']}")


@click.command()
@click.argument("task_id")
@click.pass_obj
def cancel(client: Client, task_id: str) -> None:
    """Cancel a task: it ends REVOKED (POST /api/tasks/<id>/cancel)."""
    answer = client.post(f"/api/tasks/{task_id}/cancel")
    console.print(f"{answer.get('task_id', task_id)}: {answer.get('state')} ({answer.get('message')})")


@click.command()
@click.argument("task_id")
@click.pass_obj
def retry(client: Client, task_id: str) -> None:
    """Run a FAILURE or REVOKED task again, same id (POST /api/tasks/<id>/retry)."""
    answer = client.post(f"/api/tasks/{task_id}/retry")
    console.print(f"{answer.get('task_id', task_id)}: {answer.get('state')} ({answer.get('message')})")


@click.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def purge(client: Client, yes: bool) -> None:
    """Delete every task's history and stop running tasks (POST /api/tasks/purge; admin key)."""
    if not yes:
        click.confirm(f"Purge every task and workflow at {client.url}? Running tasks are stopped", abort=True)
    answer = client.post("/api/tasks/purge")
    console.print(answer.get("message", "purged"))
    show_json(answer.get("details", {}))


COMMANDS = (submit, status, list_tasks, cancel, retry, purge)
