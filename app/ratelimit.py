"""Per-key rate limits: RATE_LIMIT=<n>/<second|minute|hour> (for example 200/second) for each API key.

Every request under /api/ counts against its key (the caller's API key; one shared count when auth is off).
Counts are kept in Redis (core.storage.ratelimit), so all API processes and Lambdas share them; each process
takes grants in leases of about a twentieth of the limit, so most requests cost no Redis round trip. Over the
limit: 429 JSON with `Retry-After` (seconds until the next window). Unset or `off`: no limit.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g, request

from app import errors
from app.auth import caller_scope
from core.connection import redis_errors
from core.errors import ConfigError
from core.storage import ratelimit

PERIODS = {"second": 1, "s": 1, "minute": 60, "m": 60, "hour": 3600, "h": 3600}
LEASES_PER_WINDOW = 20
"""A process asks Redis for about limit / LEASES_PER_WINDOW grants at a time."""


@dataclass(frozen=True)
class Limit:
    """`count` requests per `period_s` seconds, per API key."""

    count: int
    period_s: int
    text: str

    @classmethod
    def parse(cls, text: str) -> Limit | None:
        """Read RATE_LIMIT ('200/second', '1000/minute', '' or 'off'); raise ConfigError naming the format."""
        if text.strip().lower() in ("", "off", "none"):
            return None
        match = re.fullmatch(r"\s*(\d+)\s*/\s*([a-z]+)\s*", text.lower())
        if not match or match.group(2) not in PERIODS or int(match.group(1)) < 1:
            raise ConfigError(f"RATE_LIMIT must look like 200/second, 1000/minute or 5000/hour (or off), got {text!r}")
        return cls(int(match.group(1)), PERIODS[match.group(2)], text.strip())


class Limiter:
    """Hands out each key's grants from leases taken in Redis; thread-safe."""

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.lease_size = max(1, limit.count // LEASES_PER_WINDOW)
        self._held: dict[str, tuple[int, int]] = {}  # scope -> (window, grants left)
        self._lock = threading.Lock()

    def allow(self, connection: Any, scope: str, now: float) -> float | None:
        """Return None to let a request through, or the seconds until the next window."""
        window = int(now // self.limit.period_s)
        with self._lock:
            held_window, left = self._held.get(scope, (window, 0))
            if held_window == window and left > 0:
                self._held[scope] = (window, left - 1)
                return None
        granted = ratelimit.lease(connection, scope, window, self.lease_size, self.limit.count, self.limit.period_s)
        if granted <= 0:
            return (window + 1) * self.limit.period_s - now
        with self._lock:
            held_window, left = self._held.get(scope, (window, 0))
            left = left if held_window == window else 0
            self._held[scope] = (window, left + granted - 1)
        return None


def _check() -> Any:
    limiter: Limiter | None = current_app.extensions.get("taskrelay.ratelimit")
    if limiter is None or not request.path.startswith("/api/") or request.path == "/api/health":
        return None
    api_key = g.get("api_key")
    scope = caller_scope()
    with redis_errors():
        wait = limiter.allow(current_app.extensions["taskrelay"].connection, scope, time.time())
    if wait is None:
        return None
    retry_after = errors.retry_after(wait)
    who = f"key {api_key.name!r}" if api_key is not None else "this API"
    message = f"rate limit of {limiter.limit.text} for {who} exceeded; retry after {retry_after} s"
    fields = [{"field": "RATE_LIMIT", "message": message}]
    return errors.render(errors.RateLimited(message, fields, retry_after_s=retry_after))


def init_app(app: Flask, setting: str) -> None:
    """Limit requests per API key when RATE_LIMIT is set (register after auth, which names the key)."""
    limit = Limit.parse(setting)
    if limit is not None:
        app.extensions["taskrelay.ratelimit"] = Limiter(limit)
        app.before_request(_check)
