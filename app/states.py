"""How RQ's job statuses map onto the Celery states the HTTP contract promises.

| RQ status                    | state   | status word |
|------------------------------|---------|-------------|
| queued, deferred             | PENDING | queued / waiting |
| scheduled (run_at, delay)    | PENDING | scheduled   |
| queued or scheduled after a failed attempt | RETRY | retrying |
| started                      | STARTED | running     |
| finished                     | SUCCESS | completed   |
| failed                       | FAILURE | failed      |
| stopped (`rq` stop-job, purge) | FAILURE | stopped     |
| canceled (POST .../cancel)   | REVOKED | revoked     |
"""

from __future__ import annotations

from typing import Any

STATES = ("PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED")
FINAL_STATES = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
LIST_TYPES = ("active", "reserved", "scheduled", "completed")
"""Celery-inspect style groups: running, queued, delayed, done (finished and failed)."""

_BY_STATUS = {
    "queued": ("PENDING", "queued"),
    "deferred": ("PENDING", "waiting"),
    "scheduled": ("PENDING", "scheduled"),
    "started": ("STARTED", "running"),
    "finished": ("SUCCESS", "completed"),
    "failed": ("FAILURE", "failed"),
    "stopped": ("FAILURE", "stopped"),
    "canceled": ("REVOKED", "revoked"),
}
WAITING_STATUSES = frozenset({"queued", "deferred", "scheduled"})


def state_of(rq_status: str | None, meta: dict[str, Any]) -> tuple[str, str]:
    """Return (state, status word) for a job's RQ status and meta."""
    state, word = _BY_STATUS.get(rq_status or "", ("PENDING", "queued"))
    if rq_status in WAITING_STATUSES and meta.get("errors"):
        return "RETRY", "retrying"
    return state, word
