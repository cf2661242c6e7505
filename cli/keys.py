"""`taskrelay keys create|list|revoke`: the API's /api/keys routes (an admin key)."""

from __future__ import annotations

import click

from cli.client import Client, CliError
from cli.output import console, key_table, show_json


@click.group()
def keys() -> None:
    """Create, list and revoke API keys (POST, GET and DELETE /api/keys; an admin key)."""


@keys.command()
@click.option("--name", required=True, help="A unique name, shown in `list` and in audit lines.")
@click.option("--scopes", required=True, help="Comma-separated: read, submit, admin (each grants the ones before).")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@click.pass_obj
def create(client: Client, name: str, scopes: str, as_json: bool) -> None:
    """Create a key and print it: the only time it is shown."""
    answer = client.post("/api/keys", {"name": name, "scopes": [s.strip() for s in scopes.split(",") if s.strip()]})
    if as_json:
        show_json(answer)
        return
    click.echo(f"created key {answer['name']!r} ({answer['id']}, {','.join(answer['scopes'])}); shown only this once:")
    click.echo(answer["key"])


@keys.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON instead of a table.")
@click.pass_obj
def list_keys(client: Client, as_json: bool) -> None:
    """List the keys: id, name, scopes, created, last used (never a key)."""
    answer = client.get("/api/keys")
    if as_json:
        show_json(answer)
    else:
        console.print(key_table(answer["keys"]))


@keys.command()
@click.argument("id_or_name")
@click.pass_obj
def revoke(client: Client, id_or_name: str) -> None:
    """Revoke the key ID_OR_NAME (an id from `list`, or a name); API processes refuse it within 5 s."""
    matches = [key for key in client.get("/api/keys")["keys"] if id_or_name in (key["id"], key["name"])]
    if not matches:
        raise CliError(f"no key has the id or name {id_or_name!r}; `taskrelay keys list` shows them")
    for key in matches:
        answer = client.request("DELETE", f"/api/keys/{key['id']}")
        click.echo(f"revoked {answer['name']} ({answer['id']})")
