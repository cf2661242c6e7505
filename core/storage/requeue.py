"""Requeue an ended job (failed, stopped or canceled) as a new attempt with the same id, in one Lua call.

What RQ's FailedJobRegistry.requeue does (out of the failed registry, cleared
start and end, status queued, enqueued_at now, onto the tail of its queue), for
canceled jobs too, atomically: two retries at once queue it once. The job's key
loses the expiry its end gave it (a queued job must not expire), and its meta
(attempts, errors) is untouched: the attempt count goes on and the errors stay.
"""

from __future__ import annotations

from datetime import UTC, datetime

import redis
from rq import Queue
from rq.utils import utcformat

from core.model import PRIORITIES, QUEUE_NAMES
from core.storage import metrics
from core.storage.keys import ENQUEUED_CHANNEL, QUEUES_KEY, job_key
from core.storage.places import places_of

REQUEUE_ENDED = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'failed' and status ~= 'stopped' and status ~= 'canceled' then return status end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('PERSIST', KEYS[1])
redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueued_at', ARGV[2], 'started_at', '', 'ended_at', '')
redis.call('HDEL', KEYS[1], 'exc_info')
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[5], KEYS[2])
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[6], ARGV[5], 1) end
return 'requeued'
"""
"""KEYS: job hash, queue list, failed and canceled registries, RQ's set of queues, the submitted counters' hash.
ARGV: job id, the enqueued_at stamp, the channel to announce on ('' for the lowest queue, which outranks
nothing), the queue's name and the submitted counter's field ('' counts nothing). Returns 'requeued', or the
status it found ('missing')."""


def requeue(connection: redis.Redis, queue: Queue, job_id: str, count_as: tuple[str, str] | None = None) -> str:
    """Requeue `job_id` on `queue` (its origin) if it failed, was stopped or was canceled; return what it did.

    'requeued', or the status it has instead ('queued', 'started', 'finished', ...) or 'missing'. A requeue
    onto a queue above the lowest is announced to batch workers, as an enqueue is (core.storage.enqueue).
    `count_as` (task type, priority): the requeue counts as one submission of those in
    taskrelay_tasks_submitted_total, in the same script (its new attempt will be counted as finished too).
    """
    places = places_of(queue)
    counters, counter = metrics.submitted_field(*count_as) if count_as else (metrics.SUBMITTED_KEY, "")
    keys = [job_key(job_id), queue.key, places["failed"].key, places["canceled"].key, QUEUES_KEY, counters]
    channel = "" if queue.name == QUEUE_NAMES[PRIORITIES[-1]] else ENQUEUED_CHANNEL
    stamp = utcformat(datetime.now(UTC))
    outcome = connection.eval(REQUEUE_ENDED, len(keys), *keys, job_id, stamp, channel, queue.name, counter)
    return outcome.decode() if isinstance(outcome, bytes) else str(outcome)
