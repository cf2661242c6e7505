"""`taskrelay workflow submit|status|cancel` (POST/GET /api/workflows...)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.client import Client
from cli.output import console, show_json
from cli.progress import wait_for_workflow
from cli.tasks import read_json_file

INTERVAL = click.option(
    "--interval",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Seconds between polls with --wait.",
)
WAIT = click.option("--wait", is_flag=True, help="Show steps done/total until it ends; exit 1 unless it succeeds.")


@click.group()
def workflow() -> None:
    """Submit, read and cancel workflows (DAGs of tasks; see README "Workflows")."""


@workflow.command()
@click.argument("body_file", metavar="FILE.json", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@WAIT
@INTERVAL
@click.option("-q", "--quiet", is_flag=True, help="Print only the workflow id.")
@click.pass_obj
def submit(client: Client, body_file: Path, wait: bool, interval: float, quiet: bool) -> None:
    """Submit the workflow in FILE.json: {"name", "priority", "steps": [...]}."""
    answer = client.post("/api/workflows", read_json_file(body_file))
    if quiet:
        click.echo(answer["workflow_id"])
    else:
        steps = ", ".join(f"{step_id}={entry['task_id']}" for step_id, entry in answer.get("steps", {}).items())
        console.print(f"submitted workflow {answer['workflow_id']}: {steps}")
    if wait:
        wait_for_workflow(client, answer["workflow_id"], interval)


@workflow.command()
@click.argument("workflow_id")
@WAIT
@INTERVAL
@click.pass_obj
def status(client: Client, workflow_id: str, wait: bool, interval: float) -> None:
    """Show a workflow's state, progress and steps (GET /api/workflows/<id>)."""
    if wait:
        wait_for_workflow(client, workflow_id, interval)
    else:
        show_json(client.get(f"/api/workflows/{workflow_id}"))


@workflow.command()
@click.argument("workflow_id")
@click.pass_obj
def cancel(client: Client, workflow_id: str) -> None:
    """Cancel every unfinished step; the workflow ends REVOKED (POST /api/workflows/<id>/cancel)."""
    answer = client.post(f"/api/workflows/{workflow_id}/cancel")
    revoked = ", ".join(answer.get("revoked_steps", [])) or "none"
    console.print(f"workflow {workflow_id}: {answer.get('state')} (steps revoked: {revoked})")
