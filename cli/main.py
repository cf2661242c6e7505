"""The `taskrelay` command group: each command registered, and a CliError made one line and an exit code."""

from __future__ import annotations

from typing import Any

import click

from cli import keys, queues, tasks, workflows
from cli.client import Client, CliError


class Taskrelay(click.Group):
    """A click group that prints a CliError as one sentence on stderr and exits with its code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CliError as exc:
            click.echo(f"taskrelay: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyError as exc:  # an answer without a field this command reads: another version of the API
            click.echo(
                f"taskrelay: the API's answer has no {exc}; is this command older or newer than the API?", err=True
            )
            ctx.exit(1)


@click.group(cls=Taskrelay, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="taskrelay")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Taskrelay from the command line, over its HTTP API.

    The API is at TASKRELAY_URL (default http://127.0.0.1:5000), and every request
    sends TASKRELAY_API_KEY as X-API-Key. An API that does not answer, or a
    missing or refused key, exits with code 2; any other refusal with 1.
    """
    ctx.obj = Client.from_env()


for command in (*tasks.COMMANDS, workflows.workflow, queues.queues, queues.watch, keys.keys):
    cli.add_command(command)


def main() -> None:
    """Run the command line (the `taskrelay` console script)."""
    cli(prog_name="taskrelay")
