"""Idempotency keys in Redis: one JSON record per (caller, key), first written as in flight, then holding the
response to replay.

    taskrelay:idempotency:<scope>:<sha256 of the key>
        {"fingerprint", "status", "body"}               answered (status: the HTTP status)
        {"fingerprint", "status": 0, "seed", "holder"}  in flight

`begin` claims a key with SET NX, so of two concurrent requests with one key only one runs. The claim
reserves a seed from which the request's ids (task, workflow, steps) are derived. A request holds its key
for LEASE_S; after that a retry may take the key over, with the same seed, so it creates the same ids: if
the first request's process died, the retry does its work; if it was only slow, both submit the same task
and the enqueue keeps one (jobs and workflows are created only if absent). An in-flight record expires after
IN_FLIGHT_TTL_S. The lease is read off the record's remaining TTL, so API hosts' clocks play no part.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import redis

PREFIX = "taskrelay:idempotency:"
IN_FLIGHT_TTL_S = 60
"""How long an unanswered key keeps its seed, in seconds: far longer than any submit can take."""
LEASE_S = 10
"""How long a request holds its key before a retry may take it over, in seconds (the 409s' longest spell)."""
_TAKEN_OVER_BELOW_MS = (IN_FLIGHT_TTL_S - LEASE_S) * 1000
"""An in-flight record whose remaining TTL is at most this was claimed over LEASE_S ago (or released)."""


@dataclass(frozen=True)
class Claim:
    """A request's hold on a key: its own token and the seed its ids derive from (kept by a takeover)."""

    holder: str
    seed: str


@dataclass(frozen=True)
class Seen:
    """What `begin` found: nothing or a lapsed claim (this request runs), a request in flight, or a response."""

    state: str
    """'new', 'in_flight', 'mismatch' (same key, another body) or 'done'."""
    status: int = 0
    body: Any = None
    claim: Claim | None = None
    """This request's claim when state is 'new'."""
    lease_left_s: float = 0.0
    """When state is 'in_flight': seconds until a retry may take the key over."""


def record_key(scope: str, key: str) -> str:
    """Return the Redis key of `key` for caller `scope` (the key is hashed: it may hold anything)."""
    return f"{PREFIX}{scope}:{hashlib.sha256(key.encode()).hexdigest()}"


def _in_flight(fingerprint: str, claim: Claim) -> str:
    return json.dumps({"fingerprint": fingerprint, "status": 0, "seed": claim.seed, "holder": claim.holder})


def begin(connection: redis.Redis, scope: str, key: str, fingerprint: str) -> Seen:
    """Claim `key` for a request with `fingerprint`, or say what holds it (one round trip when the key is new)."""
    name = record_key(scope, key)
    claim = Claim(holder=uuid4().hex, seed=uuid4().hex)
    if connection.set(name, _in_flight(fingerprint, claim), nx=True, ex=IN_FLIGHT_TTL_S):
        return Seen("new", claim=claim)
    with connection.pipeline() as pipe:
        while True:
            try:
                pipe.watch(name)
                raw: Any = pipe.get(name)
                if raw is None:  # expired since the SET NX: claim again
                    pipe.unwatch()
                    return begin(connection, scope, key, fingerprint)
                record = json.loads(raw)
                if record["fingerprint"] != fingerprint:
                    return Seen("mismatch")
                if record["status"]:
                    return Seen("done", record["status"], record["body"])
                left_ms = int(pipe.pttl(name)) - _TAKEN_OVER_BELOW_MS
                if left_ms > 0:
                    return Seen("in_flight", lease_left_s=left_ms / 1000)
                taken = Claim(holder=claim.holder, seed=record.get("seed") or claim.seed)
                pipe.multi()
                pipe.set(name, _in_flight(fingerprint, taken), ex=IN_FLIGHT_TTL_S)
                pipe.execute()
                return Seen("new", claim=taken)
            except redis.WatchError:
                continue


def finish(connection: redis.Redis, scope: str, key: str, fingerprint: str, status: int, body: Any, ttl_s: int) -> None:
    """Store the response to replay for `ttl_s` seconds (whoever holds the key now: a taker's answer is the same)."""
    record = json.dumps({"fingerprint": fingerprint, "status": status, "body": body})
    connection.set(record_key(scope, key), record, ex=ttl_s)


def abandon(connection: redis.Redis, scope: str, key: str, claim: Claim) -> None:
    """Forget a key whose request was refused as sent (the client may send it again, corrected), if still ours."""
    _if_held(connection, record_key(scope, key), claim, lambda pipe, name: pipe.delete(name))


def release(connection: redis.Redis, scope: str, key: str, claim: Claim) -> None:
    """End our hold on a key whose request failed (5xx) but keep its seed: the retry, at once, creates the same ids.

    The failed request may have published its task before failing; with the same ids, a retry cannot make a
    second one.
    """
    lapse_s = _TAKEN_OVER_BELOW_MS // 1000
    _if_held(connection, record_key(scope, key), claim, lambda pipe, name: pipe.expire(name, lapse_s))


def _if_held(connection: redis.Redis, name: str, claim: Claim, action: Any) -> None:
    with connection.pipeline() as pipe:
        while True:
            try:
                pipe.watch(name)
                raw: Any = pipe.get(name)
                if raw is None:
                    return
                record = json.loads(raw)
                if record["status"] or record.get("holder") != claim.holder:
                    return  # answered, or taken over: no longer ours
                pipe.multi()
                action(pipe, name)
                pipe.execute()
                return
            except redis.WatchError:
                continue
