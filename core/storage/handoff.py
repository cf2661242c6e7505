"""Idle batch workers, and the hand-off of queued jobs to them by the enqueue itself.

An idle batch worker registers a ticket (what it would claim: its queues, how
many, its execution id) and blocks on an inbox list of its own. Every enqueue
that announces work (core.storage.enqueue.announce) runs HANDOFF in its own
transaction: for each idle worker, most recently idle first, it claims what that
worker's claim would (CLAIM_JOBS: the same registry entries, the same hash
changes) and pushes the claimed jobs into the worker's inbox, which wakes it
with its jobs in hand. The worker starts them without a round trip of its own,
and one enqueue wakes one worker, not every idle one.

Nothing is held only in a message: a handed-over job is claimed in its queue's
started registry exactly as if the worker had claimed it, so if the worker dies
before it pops its inbox, maintenance finds the lapsed claim and requeues the
job, as for any claim of a killed worker. The inbox itself expires at half the
claims' lifetime, so a worker stalled past that (suspended, starved) never
starts a job maintenance may requeue. A ticket lives IDLE_TICKET_S unless the
worker renews it (it does at every idle poll); an expired one is dropped from
the idle list by the next hand-off, so a dead worker receives at most one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.client import Pipeline
from rq import Queue
from rq.worker import BaseWorker

from core.storage.claims import CLAIM_JOBS, Claimed, decode, mark_busy
from core.storage.keys import JOB_PREFIX, queue_key
from core.storage.paused import PAUSED_KEY

IDLE_KEY = "taskrelay:idle-workers"
"""A list of the names of idle batch workers, newest first."""
TICKET_PREFIX = "taskrelay:idle-ticket:"
"""+ a worker's name: its ticket while it is idle (a list: execution id, how many to claim, claim TTL in seconds,
worker key, paused set, then per queue its list key, started registry key and name, highest priority first)."""
INBOX_PREFIX = "taskrelay:inbox:"
"""+ a worker's name: the jobs handed over to it (a list, see core.storage.claims.decode)."""
IDLE_TICKET_S = 1.0
"""How long an idle worker's ticket lives unless renewed, in seconds: a dead worker gets hand-offs at most this long
after its last renewal (one at most, since a hand-off takes the ticket)."""

FUNCTIONS = (
    CLAIM_JOBS
    + """
local function utcstamp(sec, usec)  -- RQ's utcformat: 2026-01-02T03:04:05.678901Z
  local days = math.floor(sec / 86400)
  local rest = sec - days * 86400
  local z = days + 719468  -- days to a civil date (H. Hinnant's algorithm)
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local day = doy - math.floor((153 * mp + 2) / 5) + 1
  local month = mp < 10 and mp + 3 or mp - 9
  local year = yoe + era * 400 + (month <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', year, month, day, math.floor(rest / 3600),
                       math.floor(rest % 3600 / 60), rest % 60, usec)
end
local function ticket_claim(ticket, worker_name, expires, stamp, job_prefix, drained)
  local queue_keys, started_keys, names = {}, {}, {}
  for i = 6, #ticket, 3 do
    local slot = #queue_keys + 1
    queue_keys[slot], started_keys[slot], names[slot] = ticket[i], ticket[i + 1], ticket[i + 2]
  end
  return claim_jobs(queue_keys, started_keys, names, ticket[5], ticket[4], tonumber(ticket[2]), expires, ticket[1],
                    worker_name, stamp, job_prefix, drained)
end
local function handoff(idle_key, ticket_prefix, inbox_prefix, job_prefix, ...)
  local idle = redis.call('LRANGE', idle_key, 0, -1)
  if #idle == 0 then return 0 end
  local pushed = {...}  -- the queues this enqueue pushed to: hand off until each is drained
  local time = redis.call('TIME')
  local now, stamp = tonumber(time[1]) + tonumber(time[2]) / 1e6, utcstamp(tonumber(time[1]), tonumber(time[2]))
  local drained, handed = {}, 0
  for i = 1, #idle do  -- the most recently idle first: its process is the likeliest to be on a CPU still
    local waiting = false
    for _, key in ipairs(pushed) do if not drained[key] then waiting = true end end
    if not waiting then break end
    local name = idle[i]
    local ticket = redis.call('LRANGE', ticket_prefix .. name, 0, -1)
    if #ticket == 0 then
      redis.call('LREM', idle_key, 0, name)  -- it stopped renewing its ticket: gone
    else
      local claimed = ticket_claim(ticket, name, now + tonumber(ticket[3]), stamp, job_prefix, drained)
      if #claimed > 0 then
        redis.call('LREM', idle_key, 0, name)
        redis.call('DEL', ticket_prefix .. name)
        redis.call('RPUSH', inbox_prefix .. name, unpack(flatten(ticket[1], claimed)))
        -- gone well before the claims lapse: a worker stalled that long must not start what maintenance requeues
        redis.call('EXPIRE', inbox_prefix .. name, math.max(1, math.floor(tonumber(ticket[3]) / 2)))
        handed = handed + 1
      end
    end
  end
  return handed
end
"""
)
"""Lua shared by the scripts here and core.storage.enqueue's IF_ABSENT: CLAIM_JOBS, `handoff` and its helpers."""

HANDOFF = FUNCTIONS + "\nreturn handoff(unpack(ARGV))\n"
"""ARGV: the idle list, ticket prefix, inbox prefix, RQ's job prefix, then the queue keys just pushed to. Returns
how many workers were handed jobs."""

HANDOFF_COMMAND = "TASKRELAY.HANDOFF"
"""How core.storage.enqueue's IF_ABSENT script, which replays queued commands, is told to run `handoff` (a script
cannot EVAL another)."""

IDLE = (
    FUNCTIONS
    + """
local idle_key, ticket_key, inbox_key, name = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local ticket = {unpack(ARGV, 6)}
-- Still registered with this ticket means nothing was handed over since (a hand-off takes the ticket).
local registered = redis.call('PEXPIRE', ticket_key, ARGV[2]) == 1
if not registered then
  local handed = redis.call('LRANGE', inbox_key, 0, -1)
  if #handed > 0 then  -- the hand-off took this worker off the idle list and took its ticket
    redis.call('DEL', inbox_key)
    return handed
  end
end
local claimed = ticket_claim(ticket, name, ARGV[3], ARGV[4], ARGV[5], {})  -- what came without a hand-off
if #claimed > 0 then
  redis.call('LREM', idle_key, 0, name)
  redis.call('DEL', ticket_key)
  return flatten(ticket[1], claimed)
end
if not registered then
  redis.call('RPUSH', ticket_key, unpack(ticket))
  redis.call('PEXPIRE', ticket_key, ARGV[2])
  if not redis.call('LPOS', idle_key, name) then redis.call('LPUSH', idle_key, name) end
end
return {}
"""
)
"""KEYS: the idle list, the worker's ticket and inbox. ARGV: the worker's name, the ticket's TTL in ms, when a claim
lapses (Unix time), the claim's stamp, RQ's job prefix, then the ticket (the same one for a whole idle spell: a
ticket still registered is only renewed). Returns what was handed over, else what it claimed itself, else
(registered as idle) nothing. An idle worker's poll costs the script, PEXPIRE and its claim's commands."""

LEAVE = """
redis.call('LREM', KEYS[1], 0, ARGV[1])
redis.call('DEL', KEYS[2])
local handed = redis.call('LRANGE', KEYS[3], 0, -1)
redis.call('DEL', KEYS[3])
return handed
"""
"""KEYS: the idle list, the worker's ticket and inbox. ARGV: the worker's name. Returns what was handed over."""


def queue_handoff(pipe: Pipeline | redis.Redis, queue_names: Sequence[str]) -> None:
    """Queue on `pipe` the hand-off of what was just pushed to `queue_names` to idle workers."""
    args = [IDLE_KEY, TICKET_PREFIX, INBOX_PREFIX, JOB_PREFIX, *(queue_key(name) for name in queue_names)]
    pipe.execute_command("EVAL", HANDOFF, 0, *args)


class IdleDesk:
    """One batch worker's side: claim or register as idle, wait for a hand-off, leave."""

    def __init__(self, connection: redis.Redis, queues: Sequence[Queue], worker: BaseWorker) -> None:
        """A claim or hand-off that takes something marks `worker` busy (in Redis and in memory)."""
        self.connection = connection
        self.queues = list(queues)
        self.worker = worker
        self.name = worker.name
        self._keys = [IDLE_KEY, TICKET_PREFIX + worker.name, INBOX_PREFIX + worker.name]
        self._inbox = INBOX_PREFIX + worker.name
        self._slots = [w for q in self.queues for w in (q.key, q.started_job_registry.key, q.name)]
        self._idle = connection.register_script(IDLE)
        self._leave = connection.register_script(LEAVE)

    def claim_or_register(
        self, want: int, expires: float, ttl_s: int, execution_id: str, stamp: str
    ) -> tuple[str, Claimed]:
        """Return (execution id, jobs) of what was handed over, else claim up to `want` jobs (claims lapsing at
        `expires`, stamped `stamp`); with nothing to claim, register as idle with a ticket for `want` jobs under
        `execution_id`, claims lapsing `ttl_s` after a hand-off. Pass the same `want` and `execution_id` for
        every call of one idle spell (until something is taken): a ticket still registered is only renewed."""
        ticket = [execution_id, want, ttl_s, self.worker.key, PAUSED_KEY, *self._slots]
        args: list[Any] = [self.name, int(IDLE_TICKET_S * 1000), expires, stamp, JOB_PREFIX, *ticket]
        return self._busy(self._idle(keys=self._keys, args=args))

    def await_handoff(self, timeout_s: float) -> tuple[str, Claimed]:
        """Block until jobs are handed over or `timeout_s` passes; return (execution id, jobs)."""
        popped: Any = self.connection.blmpop(timeout_s, 1, self._inbox, direction="LEFT", count=1_000_000)
        return self._busy(popped[1] if popped else [])

    def leave(self) -> tuple[str, Claimed]:
        """Stop being idle; return whatever was handed over meanwhile (the caller gives it back)."""
        return decode(self._leave(keys=self._keys, args=[self.name]), self.queues)

    def _busy(self, flat: Sequence[bytes]) -> tuple[str, Claimed]:
        execution, claimed = decode(flat, self.queues)
        return execution, mark_busy(self.worker, claimed)
