"""`taskrelay keys create|list|revoke`: a thin wrapper of `python -m app.keys`, which works on Redis directly.

Keys have no HTTP endpoints, so this one command group needs REDIS_URL (the
API's Redis) rather than TASKRELAY_URL, and the project's own code installed
(`make install`); every other command speaks HTTP only.
"""

from __future__ import annotations

import click

REDIS_NOTE = "Runs `python -m app.keys` on REDIS_URL (the API's Redis), not over HTTP: keys have no HTTP endpoints."


def _run(argv: list[str]) -> None:
    """Run app.keys's command with `argv` and exit with its code (2: bad arguments, 1: Redis failed)."""
    import app.keys as keys_command  # only here: every other command works without the server's code

    code = keys_command.main(argv)
    if code:
        raise click.exceptions.Exit(code)


@click.group(help=f"Create, list and revoke API keys. {REDIS_NOTE}")
def keys() -> None:
    pass


@keys.command(help=f"Create a key and print it, the only time it is shown. {REDIS_NOTE}")
@click.option("--name", required=True, help="A unique name, shown in `list` and in audit lines.")
@click.option("--scopes", required=True, help="Comma-separated: read, submit, admin.")
def create(name: str, scopes: str) -> None:
    _run(["create", "--name", name, "--scopes", scopes])


@keys.command(name="list", help=f"List the keys: id, name, scopes, created, last used (never a key). {REDIS_NOTE}")
def list_keys() -> None:
    _run(["list"])


@keys.command(help=f"Revoke a key by its id (from `list`) or its name. {REDIS_NOTE}")
@click.argument("id_or_name")
def revoke(id_or_name: str) -> None:
    _run(["revoke", id_or_name])
