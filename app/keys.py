"""Manage API keys: create one (printed once, never stored), list them, revoke one.

    python -m app.keys create --name ci --scopes submit     (or: make key NAME=ci SCOPES=submit)
    python -m app.keys list                                 (make keys)
    python -m app.keys revoke ci                            (an id from `list`, or a name; make revoke-key KEY=ci)

It talks to REDIS_URL. The same functions serve the API's /api/keys routes
(app/operations.py), which `taskrelay keys ...` calls over HTTP. Each create and
revoke writes an audit line on `taskrelay.audit` naming the key and who asked
(never the key itself).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import redis

from core.connection import connect, redis_errors
from core.errors import ApiKeyError, BackendUnavailable, StorageError
from core.settings import starting
from core.storage import apikeys
from core.storage.apikeys import ApiKey

audit = logging.getLogger("taskrelay.audit")


def create_key(connection: redis.Redis, name: str, scopes: list[str], actor: str = "the keys command") -> str:
    """Create a key named `name` with `scopes` and return it: the only time it is ever shown."""
    return created_key(connection, name, scopes, actor)[0]


def created_key(
    connection: redis.Redis, name: str, scopes: list[str], actor: str = "the keys command"
) -> tuple[str, ApiKey]:
    """Create a key named `name` with `scopes`; return it (the only time it is ever shown) and its record."""
    with redis_errors():
        key, record = apikeys.create(connection, name, scopes)
    audit.info("created key %r (%s) with scopes %s, by %s", record.name, record.id, ",".join(record.scopes), actor)
    return key, record


def revoke_key(
    connection: redis.Redis, id_or_name: str, actor: str = "the keys command", by_name: bool = True
) -> list[ApiKey]:
    """Revoke every key whose id (or, with `by_name`, name) is `id_or_name`; return them (ApiKeyError if none)."""
    with redis_errors():
        revoked = apikeys.revoke(connection, id_or_name, by_name)
    for record in revoked:
        audit.info("revoked key %r (%s), by %s", record.name, record.id, actor)
    return revoked


def describe(record: ApiKey) -> dict[str, Any]:
    """Return the API's view of a key's record: id, name, scopes, created and last-used times (never the key)."""
    return {
        "id": record.id,
        "name": record.name,
        "scopes": list(record.scopes),
        "created_at": _iso(record.created_at),
        "last_used_at": _iso(record.last_used_at),
    }


def list_records(connection: redis.Redis) -> list[ApiKey]:
    """Return every key's record, oldest first."""
    with redis_errors():
        return apikeys.list_keys(connection)


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if timestamp else "never"


def key_table(records: list[ApiKey]) -> str:
    """Return the keys as an aligned table: id, name, scopes, created, last used (never the key)."""
    rows = [("ID", "NAME", "SCOPES", "CREATED", "LAST USED")]
    rows += [(r.id, r.name, ",".join(r.scopes), _when(r.created_at), _when(r.last_used_at)) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.keys", description="Manage Taskrelay API keys")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="a unique name, shown in `list` and in audit lines")
    create.add_argument("--scopes", required=True, help=f"comma-separated, of {', '.join(apikeys.SCOPES)}")
    commands.add_parser("list", help="list the keys (never the keys themselves)")
    revoke = commands.add_parser("revoke", help="revoke a key by its id or name")
    revoke.add_argument("id_or_name")
    return parser


def main(argv: list[str] | None = None, connection: redis.Redis | None = None) -> int:
    """Run one keys command; return the exit code (2 for bad arguments or settings, 1 if it failed)."""
    args = _parser().parse_args(argv)
    settings = starting("keys")
    if settings is None:
        return 2
    connection = connection or connect(settings.redis_url)
    try:
        if args.command == "create":
            scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
            key = create_key(connection, args.name, scopes)
            print(f"created key {args.name!r}; it is shown only this once:\n{key}")
        elif args.command == "list":
            print(key_table(list_records(connection)))
        else:
            revoked = revoke_key(connection, args.id_or_name)
            print("revoked " + ", ".join(f"{r.name} ({r.id})" for r in revoked))
    except ApiKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BackendUnavailable, StorageError) as exc:
        print(f"error: {exc} (REDIS_URL={settings.redis_url.split('@')[-1]})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
