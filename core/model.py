"""The task model: priorities, the RQ queue each one maps to, and one accepted task (`TaskRequest`).

Priority points one way, decided here: workers listen on QUEUE_ORDER, highest
first, so a queued high task always starts before any queued normal or low one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

PRIORITIES = ("high", "normal", "low")
"""Highest first: the order workers listen in."""
QUEUE_NAMES = {priority: f"{priority}_priority" for priority in PRIORITIES}
QUEUE_ORDER = tuple(QUEUE_NAMES[p] for p in PRIORITIES)
PRIORITY_OF_QUEUE = {name: priority for priority, name in QUEUE_NAMES.items()}
SCHEDULES_QUEUE = "taskrelay_schedules"
"""Where rq-scheduler puts a periodic schedule when it is due; its job only creates the real task, so
workers take it before anything else (it costs one enqueue and must not wait behind a backlog)."""

MAX_KEEP_AGE_S = 90 * 24 * 3600
"""Longest history age a task or task type may ask for: 90 days, in seconds."""
MAX_KEEP_COUNT = 1_000_000
"""Largest history count a task or task type may ask for (KEEP_FINISHED/KEEP_FAILED still cap each queue)."""
FINAL_STATES = ("success", "failure")
"""The final states history is kept for, by name in `Retention` and its JSON form."""


def priority_of(meta: dict[str, Any], queue_name: str) -> str | None:
    """Return a job's priority: the one it was submitted with (its meta's), else its queue's (None off them)."""
    return meta.get("priority") or PRIORITY_OF_QUEUE.get(queue_name)


@dataclass(frozen=True)
class Keep:
    """How much history of one final state to keep: each task for at most `age_s` seconds, and at most `count`
    tasks of its type (None: the next setting down decides)."""

    age_s: int | None = None
    count: int | None = None

    def problems(self, state: str) -> list[str]:
        """Return what is wrong with this setting, one sentence per field naming it and the allowed range."""
        found = []
        for name, value, top in (("age_s", self.age_s, MAX_KEEP_AGE_S), ("count", self.count, MAX_KEEP_COUNT)):
            ok = value is None or (isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= top)
            if not ok:
                found.append(f"{state}.{name} must be an integer from 1 to {top}, not {value!r}")
        return found


@dataclass(frozen=True)
class Retention:
    """How long, and how many of, a task's finished (`success`) and failed (`failure`) history to keep.

    Like BullMQ's removeOnComplete/removeOnFail `{age, count}`. Precedence points one way, decided by `over`:
    a submit's setting wins over its task type's, which wins over the environment (RESULT_TTL_S, FAILURE_TTL_S).
    """

    success: Keep = field(default_factory=Keep)
    failure: Keep = field(default_factory=Keep)

    def over(self, fallback: Retention) -> Retention:
        """Return this retention with each field it leaves unset taken from `fallback`."""
        theirs = fallback.keeps()
        return Retention(*(_over(mine, theirs[state]) for state, mine in self.keeps().items()))

    def problems(self) -> list[str]:
        """Return what is wrong with this retention (empty when it is valid)."""
        return [*self.success.problems("success"), *self.failure.problems("failure")]

    def to_dict(self) -> dict[str, dict[str, int]]:
        """Return the JSON form (the wire message's `retention`): only the fields that are set."""
        found = {}
        for state, keep in self.keeps().items():
            fields = {name: value for name, value in (("age_s", keep.age_s), ("count", keep.count)) if value}
            if fields:
                found[state] = fields
        return found

    @classmethod
    def from_dict(cls, fields: Any) -> Retention:
        """Read the JSON form; raise ValueError saying what is wrong with it."""
        if not isinstance(fields, dict) or set(fields) - set(FINAL_STATES):
            raise ValueError(f"retention must be an object with {' and/or '.join(FINAL_STATES)}")
        keeps = []
        for state in FINAL_STATES:
            keep = fields.get(state) or {}
            if not isinstance(keep, dict) or set(keep) - {"age_s", "count"}:
                raise ValueError(f"retention.{state} must be an object with age_s and/or count")
            keeps.append(Keep(keep.get("age_s"), keep.get("count")))
        retention = cls(*keeps)
        if problems := retention.problems():
            raise ValueError(f"retention.{'; retention.'.join(problems)}")
        return retention

    def keeps(self) -> dict[str, Keep]:
        """Return the setting of each final state, by name (FINAL_STATES order)."""
        return {"success": self.success, "failure": self.failure}


def _over(mine: Keep, theirs: Keep) -> Keep:
    return Keep(
        mine.age_s if mine.age_s is not None else theirs.age_s,
        mine.count if mine.count is not None else theirs.count,
    )


NO_RETENTION = Retention()
"""Nothing set: the environment's defaults decide."""


@dataclass(frozen=True)
class TaskRequest:
    """One accepted task, as the enqueue side needs it (the API or the bridge builds it)."""

    task_id: str
    task_type: str
    priority: str
    parameters: dict[str, Any]
    submitted_at: str
    max_retries: int | None = None
    run_at: datetime | None = None
    schedule_id: str | None = None
    retention: Retention = NO_RETENTION
    """This task's own history settings; unset fields fall back to its task type's, then the environment's."""
