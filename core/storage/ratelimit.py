"""Per-key rate limits in Redis, shared by every API process and Lambda: a fixed window per key, handed out to
each process in leases so most requests cost no round trip.

    taskrelay:ratelimit:<scope>:<window number>   the count of requests granted in that window (expires after it)

`lease` asks for up to `want` of a window's requests in one INCRBY and returns how many it got; a process
serves that many from memory before asking again. Across all processes no more than the limit is granted per
window; a process may be left holding up to want - 1 unused grants when the window ends (then fewer than the
limit are served that window, never more).
"""

from __future__ import annotations

from typing import Any

import redis

PREFIX = "taskrelay:ratelimit:"

LEASE = """
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
if used == tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
local before = used - tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
if before >= limit then return 0 end
return math.min(tonumber(ARGV[1]), limit - before)
"""
"""KEYS: the window's counter. ARGV: how many wanted, the limit, the counter's TTL. Returns how many granted."""


def lease(connection: redis.Redis, scope: str, window: int, want: int, limit: int, period_s: int) -> int:
    """Take up to `want` of window `window`'s `limit` requests for `scope`; return how many were granted."""
    key = f"{PREFIX}{scope}:{window}"
    granted: Any = connection.eval(LEASE, 1, key, want, limit, period_s * 2)
    return int(granted)
