"""Idempotency keys in Redis: one JSON record per (caller, key), first written as in flight, then holding the
response to replay.

    taskrelay:idempotency:<scope>:<sha256 of the key>   {"fingerprint", "status", "body"}   (status 0: in flight)

`begin` claims a key with SET NX, so of two concurrent requests with one key only one runs. An in-flight
record expires after IN_FLIGHT_TTL_S, so a request whose API process died does not block its key for a day.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import redis

PREFIX = "taskrelay:idempotency:"
IN_FLIGHT_TTL_S = 60
"""How long a claimed key waits for its response before another request may claim it, in seconds."""


@dataclass(frozen=True)
class Seen:
    """What `begin` found: nothing (this request runs), a request in flight, or a stored response."""

    state: str
    """'new', 'in_flight', 'mismatch' (same key, another body) or 'done'."""
    status: int = 0
    body: Any = None


def record_key(scope: str, key: str) -> str:
    """Return the Redis key of `key` for caller `scope` (the key is hashed: it may hold anything)."""
    return f"{PREFIX}{scope}:{hashlib.sha256(key.encode()).hexdigest()}"


def begin(connection: redis.Redis, scope: str, key: str, fingerprint: str) -> Seen:
    """Claim `key` for a request with `fingerprint`, or say what holds it (one or two round trips)."""
    name = record_key(scope, key)
    claim = json.dumps({"fingerprint": fingerprint, "status": 0})
    if connection.set(name, claim, nx=True, ex=IN_FLIGHT_TTL_S):
        return Seen("new")
    raw: Any = connection.get(name)
    if raw is None:  # expired between the two calls: claim again
        return begin(connection, scope, key, fingerprint)
    record = json.loads(raw)
    if record["fingerprint"] != fingerprint:
        return Seen("mismatch")
    if not record["status"]:
        return Seen("in_flight")
    return Seen("done", record["status"], record["body"])


def finish(connection: redis.Redis, scope: str, key: str, fingerprint: str, status: int, body: Any, ttl_s: int) -> None:
    """Store the response to replay for `ttl_s` seconds."""
    record = json.dumps({"fingerprint": fingerprint, "status": status, "body": body})
    connection.set(record_key(scope, key), record, ex=ttl_s)


def abandon(connection: redis.Redis, scope: str, key: str) -> None:
    """Release a claimed key whose request was refused (the client may send it again, corrected)."""
    connection.delete(record_key(scope, key))
