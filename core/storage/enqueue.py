"""A TaskRequest becomes an RQ job: a batch of them (or one) in one MULTI/EXEC.

Every job runs RUNNER with (task type, parameters) and calls FAILURE_CALLBACK
on each failed attempt; both are dotted paths RQ imports in the worker.
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from rq import Callback, Queue, Retry
from rq.defaults import CALLBACK_TIMEOUT
from rq.job import Job, JobStatus
from rq.utils import utcformat

from core import registry
from core.model import PRIORITIES, QUEUE_NAMES, TaskRequest
from core.registry import TaskType
from core.settings import Settings
from core.storage import handoff
from core.storage.keys import ENQUEUED_CHANNEL, QUEUES_KEY, job_key
from core.storage.queues import SERIALIZER, get_queue
from core.storage.retention import count_meta

RUNNER = "jobs.runner.run"
FAILURE_CALLBACK = "jobs.runner.on_failure"

_JITTER = random.Random()  # one generator: seeding a new one per task costs more than the rest of its enqueue


def backoff_intervals(max_retries: int, base_s: float, cap_s: float, rng: random.Random | None = None) -> list[int]:
    """Return the wait before each retry in whole seconds: base * 2**n with +-50% jitter, capped.

    Jitter is drawn once at submission, so the schedule is stored with the job
    and visible; it spreads retries of tasks that failed together.
    """
    rng = rng or _JITTER
    delays = []
    for attempt in range(max_retries):
        delay = min(cap_s, base_s * 2**attempt) * rng.uniform(0.5, 1.5)
        delays.append(max(0, round(delay)) if base_s > 0 else 0)
    return delays


def job_options(
    settings: Settings, spec: TaskType, request: TaskRequest, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the RQ job options of `request`: id, type, timeouts, TTLs, failure callback, meta (plus `meta`)
    and retries.

    The TTLs and history counts are the request's own, else its task type's, else the environment's TTLs (the
    environment's counts are per queue: core.storage.retention).
    """
    retries = spec.max_retries if request.max_retries is None else request.max_retries
    keep = request.retention.over(spec.retention)
    return {
        "job_id": request.task_id,
        "description": spec.name,
        "timeout": spec.timeout_s,
        "result_ttl": keep.success.age_s or settings.result_ttl_s,
        "failure_ttl": keep.failure.age_s or settings.failure_ttl_s,
        "on_failure": Callback(FAILURE_CALLBACK),
        "meta": {
            "task_type": spec.name,
            "priority": request.priority,
            "max_retries": retries,
            "attempts": 0,  # "errors" appears with the first failed attempt (readers default it to [])
            **({"schedule_id": request.schedule_id} if request.schedule_id else {}),
            **count_meta(keep),
            **(meta or {}),
        },
        "retry": Retry(max=retries, interval=backoff_intervals(retries, settings.retry_base_s, settings.retry_max_s))
        if retries > 0
        else None,
    }


def created_at(request: TaskRequest, otherwise: datetime) -> datetime:
    """Return when the API accepted `request` (a job's `created_at`), or `otherwise` if that is not a time.

    The job's `enqueued_at` is when it reached its RQ queue; in between the task waited in the ingress.
    """
    try:
        accepted = datetime.fromisoformat(request.submitted_at)
    except ValueError:
        return otherwise
    return accepted if accepted.tzinfo else accepted.replace(tzinfo=UTC)


def create_job(queue: Queue, request: TaskRequest, func: str, **options: Any) -> Job:
    """Return `queue.create_job(func, **options)` for `request`, created when the API accepted it (not now)."""
    job = queue.create_job(func, **options)
    job.created_at = created_at(request, job.created_at)
    return job


def announce(pipe: Pipeline | redis.Redis, priorities: list[str]) -> None:
    """Hand what was just queued at `priorities` to idle batch workers (core.storage.handoff), and publish the
    highest of them on ENQUEUED_CHANNEL: a busy batch worker holding claims below it hands them back
    (jobs.batch_worker)."""
    if priorities:
        handoff.queue_handoff(pipe, [QUEUE_NAMES[priority] for priority in priorities])
        pipe.publish(ENQUEUED_CHANNEL, QUEUE_NAMES[min(priorities, key=PRIORITIES.index)])


def enqueue_batch(
    connection: redis.Redis,
    settings: Settings,
    requests: list[TaskRequest],
    also: Callable[[Pipeline], object] | None = None,
) -> list[str]:
    """Enqueue every request whose job does not exist yet, all in one MULTI/EXEC; return the ids created.

    Idempotent by task id: a request whose job already exists (a redelivered
    message) is skipped and that job left as it is. The keys of the new jobs are
    WATCHed, so two callers racing on the same id cannot both create it. `also`
    may add commands to the same transaction.
    """
    queues = {priority: get_queue(connection, priority) for priority in PRIORITIES}
    first_of_each: dict[str, TaskRequest] = {}
    for request in requests:
        first_of_each.setdefault(request.task_id, request)
    requests = list(first_of_each.values())
    keys = [job_key(r.task_id) for r in requests]
    if _created_if_absent(connection, keys, lambda pipe: _add_jobs(pipe, settings, queues, requests), also):
        return [r.task_id for r in requests]
    while True:  # some exist already (a redelivery): WATCH them, see which, create the rest
        with connection.pipeline(transaction=True) as pipe:
            try:
                if keys:
                    pipe.watch(*keys)
                fresh = _missing(connection, requests)
                pipe.multi()
                _add_jobs(pipe, settings, queues, fresh)
                if also is not None:
                    also(pipe)
                pipe.execute()
                return [r.task_id for r in fresh]
            except redis.WatchError:
                continue  # one of these jobs changed meanwhile (created by a racing caller): check again


def _add_jobs(pipe: Pipeline, settings: Settings, queues: dict[str, Queue], requests: list[TaskRequest]) -> None:
    """Queue `requests` on `pipe`: one HSET per job and one RPUSH per queue.

    The job hashes are RQ's own (`Job.to_dict()`), so workers, registries and
    rq-dashboard see ordinary jobs; what is skipped is RQ's per-job second HSET
    (status) and per-job RPUSH, which cost a third of the batch.
    """
    now = datetime.now(UTC)
    pushes: dict[str, list[str]] = {}
    pushed: set[str] = set()  # the priorities pushed to
    for request in requests:
        spec = registry.get(request.task_type)
        queue = queues[request.priority]
        args = (spec.name, request.parameters)
        if request.run_at is not None and request.run_at > now:
            job = create_job(
                queue, request, RUNNER, args=args, status=JobStatus.SCHEDULED, **job_options(settings, spec, request)
            )
            queue.schedule_job(job, request.run_at, pipeline=pipe)
            continue
        pipe.hset(job_key(request.task_id), mapping=job_hash(settings, spec, request, queue.name, now))
        pushes.setdefault(queue.key, []).append(request.task_id)
        pushed.add(request.priority)
    for queue_key, job_ids in pushes.items():
        pipe.sadd(QUEUES_KEY, queue_key)
        pipe.rpush(queue_key, *job_ids)
    announce(pipe, sorted(pushed))


def job_hash(
    settings: Settings,
    spec: TaskType,
    request: TaskRequest,
    queue_name: str,
    now: datetime,
    meta: dict[str, Any] | None = None,
) -> dict:
    """Return the Redis hash of a queued job as `Job.to_dict()` writes it, without building a Job and without
    its empty fields.

    Building RQ Job objects is most of the bridge's cost per task; this writes
    the same non-empty fields (tests/unit/test_enqueue_batch.py compares the two
    field by field, so an RQ upgrade that changes its job hash fails that test).
    RQ restores a missing field as empty (and a missing callback timeout as its
    default); leaving out the seven empty ones and a default callback timeout
    saves ~130 bytes of Redis per task.
    """
    options = job_options(settings, spec, request, meta)
    stamp = utcformat(now)
    mapping: dict[str, Any] = {
        "created_at": utcformat(created_at(request, now)),
        "data": zlib.compress(SERIALIZER.dumps((RUNNER, None, (spec.name, request.parameters), {}))),
        "failure_callback_name": FAILURE_CALLBACK,
    }
    if options["on_failure"].timeout != CALLBACK_TIMEOUT:  # RQ restores a missing one as CALLBACK_TIMEOUT
        mapping["failure_callback_timeout"] = options["on_failure"].timeout
    retry = options["retry"]
    if retry is not None:
        mapping["retries_left"] = retry.max
        mapping["retry_intervals"] = json.dumps(retry.intervals)
    mapping.update(
        origin=queue_name,
        description=spec.name,
        enqueued_at=stamp,
        timeout=spec.timeout_s,
        result_ttl=options["result_ttl"],
        failure_ttl=options["failure_ttl"],
        status=JobStatus.QUEUED.value,
        meta=SERIALIZER.dumps(options["meta"]),
    )
    return mapping


IF_ABSENT = (
    handoff.FUNCTIONS
    + """
for first = 1, #KEYS, 1000 do  -- one EXISTS per 1,000 keys (unpack's stack is bounded)
  if redis.call('EXISTS', unpack(KEYS, first, math.min(first + 999, #KEYS))) > 0 then return 0 end
end
local i = 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  if ARGV[i + 1] == HANDOFF_COMMAND then
    handoff(unpack(ARGV, i + 2, i + n))
  else
    redis.call(unpack(ARGV, i + 1, i + n))
  end
  i = i + n + 1
end
return 1
""".replace("HANDOFF_COMMAND", repr(handoff.HANDOFF_COMMAND))
)
"""Run the commands in ARGV (each as its length, then its words) only if none of KEYS exists; return 1 if they
ran. A hand-off (an EVAL of handoff.HANDOFF, which a script cannot run) is sent as handoff.HANDOFF_COMMAND and run
by the same function. The commands' own keys are not declared, so, like the batch worker's claim, it needs a
single Redis."""


SCRIPT_MAX_WORDS = 7000
"""Longest command IF_ABSENT runs (Lua's unpack is bounded near 8,000 values); a longer one goes the WATCH way."""


def _created_if_absent(
    connection: redis.Redis,
    keys: list[str],
    write: Callable[[Pipeline], object],
    also: Callable[[Pipeline], object] | None,
) -> bool:
    """Run what `write` and `also` queue on a pipeline as one script, only if none of `keys` exists; return
    whether it ran. A first delivery's whole batch in one round trip, where WATCH, EXISTS and MULTI/EXEC take
    three.

    The commands are read back from the pipeline they were queued on (`command_stack`, redis-py's own list
    of (words, options); tests/unit/test_enqueue_batch.py pins it), so they are the same commands the
    transaction below would send.
    """
    recorder = connection.pipeline(transaction=False)
    write(recorder)
    if also is not None:
        also(recorder)
    words: list[Any] = []
    longest = 0
    for command, _options in recorder.command_stack:
        if command[:2] == ("EVAL", handoff.HANDOFF):  # EVAL script numkeys args... -> HANDOFF_COMMAND args...
            command = (handoff.HANDOFF_COMMAND, *command[3:])
        words.append(len(command))
        words.extend(command)
        longest = max(longest, len(command))
    recorder.reset()
    if longest > SCRIPT_MAX_WORDS:  # e.g. one RPUSH of a BRIDGE_BATCH_SIZE over ~7,000: the transaction takes it
        return False
    return bool(_if_absent(connection)(keys=keys, args=words, client=connection))


_IF_ABSENT_SCRIPT: Script | None = None


def _if_absent(connection: redis.Redis) -> Script:
    """Return IF_ABSENT as a redis-py Script, made once: making one hashes the ~5 KB script, on every enqueue if
    made per call. Each call passes its own client (the Script loads itself into a Redis that lacks it)."""
    global _IF_ABSENT_SCRIPT
    if _IF_ABSENT_SCRIPT is None:
        _IF_ABSENT_SCRIPT = connection.register_script(IF_ABSENT)
    return _IF_ABSENT_SCRIPT


EXISTS_EACH = "local found = {} for i, key in ipairs(KEYS) do found[i] = redis.call('EXISTS', key) end return found"
"""One command for a whole batch: packing 500 EXISTS commands costs the client more than Redis running them."""


def _missing(connection: redis.Redis, requests: list[TaskRequest]) -> list[TaskRequest]:
    """Return the requests whose job hash does not exist, in one round trip. (A first delivery, where none
    does, is told by IF_ABSENT before this is asked.)"""
    if not requests:
        return []
    keys = [job_key(request.task_id) for request in requests]
    found: Any = connection.eval(EXISTS_EACH, len(keys), *keys)
    return [r for r, exists in zip(requests, found, strict=True) if not exists]
