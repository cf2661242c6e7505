"""API keys in Redis, stored only as SHA-256 digests, with their name, scopes and created and last-used times.

Layout: one hash, KEYS_KEY, maps a key's digest to its JSON record; LAST_USED_KEY
maps a key's id (the first ID_CHARS hex digits of its digest) to when it was last
seen, in Unix seconds. A key itself is never written anywhere: `create` returns
it once, and only its digest is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass

import redis

from core.errors import ApiKeyError

KEYS_KEY = "taskrelay:apikeys"
"""Hash: SHA-256 hex digest of a key -> JSON {id, name, scopes, created_at}."""
LAST_USED_KEY = "taskrelay:apikeys:last_used"
"""Hash: key id -> last time the key was seen, Unix seconds."""
KEY_PREFIX = "tr_"
"""Every generated key starts with this, so a leaked one is recognizable (secret scanners, logs)."""
KEY_BYTES = 32
"""Random bytes in a generated key (43 URL-safe characters after the prefix)."""
ID_CHARS = 12
"""Hex digits of the digest that name a key in `list` and `revoke`; they reveal nothing of the key."""
SCOPES = ("read", "submit", "admin")
"""Each scope grants the ones before it: admin ⊇ submit ⊇ read."""
BOOTSTRAP_NAME = "bootstrap"
"""The name TASKRELAY_BOOTSTRAP_KEY is listed under."""
NAME_PATTERN = r"^[A-Za-z0-9_.@-]{1,100}$"
"""What a key's name may be: it shows in tables and audit lines."""
ID_PATTERN = rf"^[0-9a-f]{{{ID_CHARS}}}$"
"""What a key's id looks like."""


@dataclass(frozen=True)
class ApiKey:
    """What is known of a key: never the key itself."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: float
    last_used_at: float | None = None

    def grants(self, scope: str) -> bool:
        """Return whether this key may do what `scope` allows (a higher scope grants the lower ones)."""
        return any(SCOPES.index(held) >= SCOPES.index(scope) for held in self.scopes if held in SCOPES)

    def encode(self) -> str:
        return json.dumps(
            {"id": self.id, "name": self.name, "scopes": list(self.scopes), "created_at": self.created_at}
        )

    @classmethod
    def decode(cls, raw: bytes | str) -> ApiKey:
        data = json.loads(raw)
        return cls(data["id"], data["name"], tuple(data["scopes"]), float(data["created_at"]))


def new_key() -> str:
    """Return a fresh random key: KEY_PREFIX + KEY_BYTES random bytes, URL-safe."""
    return KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)


def digest(key: str) -> str:
    """Return the SHA-256 hex digest a key is stored and looked up under."""
    return hashlib.sha256(key.encode()).hexdigest()


def check_scopes(scopes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return `scopes` without duplicates, in SCOPES order; raise ApiKeyError naming the allowed ones."""
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ApiKeyError(f"unknown or missing scopes {unknown or ''}; allowed: {', '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in scopes)


def _record(key: str, name: str, scopes: tuple[str, ...], now: float) -> tuple[str, ApiKey]:
    hashed = digest(key)
    return hashed, ApiKey(hashed[:ID_CHARS], name, scopes, now)


def create(connection: redis.Redis, name: str, scopes: list[str] | tuple[str, ...]) -> tuple[str, ApiKey]:
    """Make a new key named `name` (unique) with `scopes`; return (the key, its record). The key is not kept."""
    scopes = check_scopes(scopes)
    if not re.fullmatch(NAME_PATTERN, name) or name == BOOTSTRAP_NAME:
        raise ApiKeyError(f"a key's name is 1 to 100 letters, digits or _.@- and not {BOOTSTRAP_NAME!r}; got {name!r}")
    if any(existing.name == name for existing in list_keys(connection)):
        raise ApiKeyError(
            f"a key named {name!r} exists already; revoke it first or choose another name", ApiKeyError.TAKEN
        )
    key = new_key()
    hashed, record = _record(key, name, scopes, time.time())
    connection.hset(KEYS_KEY, hashed, record.encode())
    return key, record


def lookup(connection: redis.Redis, key: str) -> ApiKey | None:
    """Return the record of `key`, or None when no such key is stored (one HGET)."""
    hashed = digest(key)
    raw = connection.hget(KEYS_KEY, hashed)
    if raw is None:
        return None
    record = ApiKey.decode(raw)
    # The lookup is by digest, so its timing says nothing about the key; this is belt and braces.
    return record if hmac.compare_digest(record.id, hashed[:ID_CHARS]) else None


def bootstrap_record(key: str) -> ApiKey:
    """Return the admin record of TASKRELAY_BOOTSTRAP_KEY (its created_at is the process start)."""
    return _record(key, BOOTSTRAP_NAME, ("admin",), time.time())[1]


def store_bootstrap(connection: redis.Redis, key: str) -> ApiKey:
    """List the bootstrap key in Redis (replacing an earlier bootstrap key's entry); return its record."""
    hashed, record = _record(key, BOOTSTRAP_NAME, ("admin",), time.time())
    if connection.hexists(KEYS_KEY, hashed):
        return record
    stale = [h for h, raw in connection.hgetall(KEYS_KEY).items() if ApiKey.decode(raw).name == BOOTSTRAP_NAME]
    pipe = connection.pipeline(transaction=True)
    if stale:
        pipe.hdel(KEYS_KEY, *stale)
    pipe.hsetnx(KEYS_KEY, hashed, record.encode())
    pipe.execute()
    return record


def count(connection: redis.Redis) -> int:
    """Return how many keys are stored."""
    return int(connection.hlen(KEYS_KEY))


def list_keys(connection: redis.Redis) -> list[ApiKey]:
    """Return every stored key's record with its last-used time, oldest first."""
    used = {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in connection.hgetall(LAST_USED_KEY).items()}
    records = [ApiKey.decode(raw) for raw in connection.hgetall(KEYS_KEY).values()]
    return sorted(
        (ApiKey(r.id, r.name, r.scopes, r.created_at, used.get(r.id)) for r in records), key=lambda r: r.created_at
    )


def touch(connection: redis.Redis, key_id: str, when: float) -> None:
    """Record that the key `key_id` was used at `when` (Unix seconds)."""
    connection.hset(LAST_USED_KEY, key_id, f"{when:.3f}")


def revoke(connection: redis.Redis, id_or_name: str, by_name: bool = True) -> list[ApiKey]:
    """Delete every key whose id (or, with `by_name`, name) is `id_or_name`; return what was deleted.

    Raises ApiKeyError if nothing matches, or if the match is the bootstrap key: it is
    TASKRELAY_BOOTSTRAP_KEY, checked in-process, so only a change of that setting retires it.
    """
    matches = {
        hashed: record
        for hashed, raw in connection.hgetall(KEYS_KEY).items()
        if id_or_name in ((record := ApiKey.decode(raw)).id, record.name if by_name else None)
    }
    if not matches:
        what = "id or name" if by_name else "id"
        raise ApiKeyError(f"no key has the {what} {id_or_name!r}; see the list of keys", ApiKeyError.UNKNOWN)
    if any(record.name == BOOTSTRAP_NAME for record in matches.values()):
        raise ApiKeyError(
            "the bootstrap key is TASKRELAY_BOOTSTRAP_KEY: to retire it, change or unset that setting and restart "
            "the API (it re-lists the key at start)",
            ApiKeyError.FIXED,
        )
    pipe = connection.pipeline(transaction=True)
    pipe.hdel(KEYS_KEY, *matches)
    pipe.hdel(LAST_USED_KEY, *(record.id for record in matches.values()))
    pipe.execute()
    return list(matches.values())
