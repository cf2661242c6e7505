"""A worker that takes tasks in batches and writes their outcomes in one transaction per batch.

RQ's workers spend about 18 Redis round trips (and ~55 commands) per job; most
of them are the bookkeeping around it. This worker keeps RQ's data model (job
hashes, started and finished registries), so the API, rq-dashboard and `rq
info` see ordinary jobs, but:

- one Lua call claims several queued jobs, highest priority first, reads their
  hashes, marks them started and registers them in their queue's started
  registry with a short heartbeat, so a worker killed mid-batch loses nothing:
  maintenance finds the claims and requeues them (one never started is
  requeued whatever its retries, see jobs.runner.on_failure);
- a claim holds about CLAIM_BUDGET_S of work, sized from the durations this
  worker has observed (one job until it has seen one; at most BATCH_SIZE): slow
  tasks are claimed one at a time, as RQ's own workers take them;
- the claimed jobs run in this process, like SimpleWorker (no fork);
- outcomes wait in one MULTI/EXEC (core.storage.claims.Outcomes: per success one
  HSET, with the return value in the job hash instead of RQ's results stream,
  and its EXPIRE; per batch one ZADD and one ZREM per registry) that is sent
  when the batch is done or its oldest success is FLUSH_AFTER_S old, whichever
  is first (and before a task that would make it older), so a kill forgets at
  most that much finished work, all of it or none;
- an attempt is counted in the job's meta with its outcome; a task expected to
  run longer than FLUSH_AFTER_S (or of a type not timed yet) has its attempt
  written before it starts, as RQ's own workers do for every task;
- an idle worker registers as idle and blocks on an inbox of its own; every
  enqueue, in its own transaction, claims jobs for idle workers and pushes them
  into their inboxes (core.storage.handoff), so the woken worker starts them
  without a round trip, and one enqueue wakes one worker, not all;
- every enqueue is also announced on a Redis channel (core.storage.keys.ENQUEUED_CHANNEL):
  a worker holding claims of a lower queue (told by RQ's pubsub thread) gives
  its unstarted ones back before its next task and claims again, so a high
  task waits for at most the task each worker is running.

A failing task goes through RQ's own failure handling (retries, callbacks),
after the successes before it are written. Jobs still unstarted when the
worker is told to stop are put back at the head of their queues.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import deque
from contextlib import suppress
from typing import Any

import redis
from rq import Queue
from rq.command import parse_payload
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

from core.connection import redis_errors
from core.errors import BackendUnavailable, StorageError
from core.settings import DEFAULT_FAILURE_TTL_S
from core.storage import cancel, claims, handoff, metrics, paused, places, workflows
from core.storage.keys import ENQUEUED_CHANNEL, started_key
from jobs import runner
from jobs.heartbeat import HeartbeatSimpleWorker
from jobs.interrupt import CancellablePenalty, TaskRevoked, interrupt

BATCH_SIZE = 50
"""Most jobs claimed at once: small enough that a batch's claims are renewed well within their heartbeat."""
CLAIM_BUDGET_S = 0.05
"""Expected seconds of work one claim takes (from the observed durations per task)."""
IDLE_POLL_S = 0.25
"""How long an idle worker sleeps between claims when no enqueue is announced, in seconds: what a job enqueued
without an announcement (RQ's own scheduler, a retry) may wait for an idle worker."""
IDLE_HEARTBEAT_S = 5.0
"""How often an idle worker renews its registration, in seconds (at most its dequeue timeout)."""
FLUSH_AFTER_S = 0.05
"""Most seconds a finished task's outcome waits in the pipeline: what a SIGKILL can make the worker re-run."""
DURATION_WEIGHT = 0.2
"""Weight of the latest task in the moving average of task durations that sizes claims."""


def _average(previous: float | None, seconds: float) -> float:
    """Return the moving average of durations after `seconds` (DURATION_WEIGHT for the latest)."""
    return seconds if previous is None else previous + DURATION_WEIGHT * (seconds - previous)


class BatchWorker(HeartbeatSimpleWorker):
    """Claim, run and record tasks a batch at a time (WORKER_CLASS=batch)."""

    death_penalty_class = CancellablePenalty

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch: deque[tuple[Job, Queue, str]] = deque()
        self._claims: dict[str, tuple[str, str]] = {}  # job id -> (started registry key, registry member)
        self._pending: claims.Outcomes | None = None
        self._tally = metrics.Tally()  # the pending successes' counts, written with them
        self._claim_lock = threading.Lock()
        self._claimer = claims.Claimer(self.connection, self.queues, self)  # a claim marks this worker busy
        self._last_beat = 0.0
        self._last_suspension_check = 0.0
        self._running: str | None = None
        self._revoked: set[str] = set()
        self._per_task_s: float | None = None  # moving average of task durations; None until one has run
        self._per_type_s: dict[str, float] = {}  # the same, per task type
        self._pending_since = 0.0
        self._rank = {queue.name: rank for rank, queue in enumerate(self.queues)}  # 0 = highest priority
        self._announced: frozenset[str] = frozenset()  # queues announced on ENQUEUED_CHANNEL since the last claim
        self._desk = handoff.IdleDesk(self.connection, self.queues, self)  # idle: hand-offs come here
        self._idle_spell: tuple[str, int] | None = None  # the ticket's execution id and size while idle

    # Taking work

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if self._batch and self._outranked():
            self._release_unstarted("a higher-priority task was enqueued")
        if not self._batch:
            if timeout is None:  # burst mode: claim once, never register as idle
                self._claim_batch()
            else:
                self._wait_for_work(timeout, max_idle_time)
        if not self._batch:
            return None  # burst mode with nothing queued, or idle past max_idle_time
        job, queue, _member = self._batch[0]
        return job, queue

    def _wait_for_work(self, timeout: int, max_idle_time: int | None) -> None:
        """Idle: claim, or register as idle and wait for an enqueue to hand jobs over (core.storage.handoff), at
        most IDLE_POLL_S before trying again; keep the worker's TTL alive and run maintenance when due, as RQ's
        own idle loop does.

        Never RQ's blocking pop: over several queues RQ uses BLPOP, and a job it popped is held only in this
        process until the claim script registers it, so a kill, or Redis restarting, in between would lose
        it. Here a job leaves its queue only by a claim (the worker's own, or one an enqueue made for it), which
        registers it in the started registry in the same script.
        """
        # Nothing in hand: write what finished first. A batch emptied by giving its claims back (outranked) ended
        # without a task's end to flush it, and an idle worker would hold those successes unwritten until its
        # claims lapse (then maintenance would run them again).
        self._flush()
        if self.get_state() != WorkerStatus.IDLE:  # the end of the last batch wrote it
            self.set_state(WorkerStatus.IDLE)
        self.procline("Listening on " + ",".join(self.queue_names()))
        idle_since = last_beat = time.monotonic()
        backoff = 1.0
        while not self._batch:
            if max_idle_time is not None and time.monotonic() - idle_since >= max_idle_time:
                return
            try:
                if time.monotonic() - last_beat >= min(timeout, IDLE_HEARTBEAT_S):
                    self.heartbeat()
                    last_beat = time.monotonic()
                    if self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()
                self._claim_batch(register=True)
                if not self._batch:
                    self._take(*self._desk.await_handoff(IDLE_POLL_S))
                backoff = 1.0
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                self.log.error("Worker %s: could not reach Redis (%s); retrying in %.0f s", self.name, exc, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)
        self.heartbeat()

    def claim_size(self) -> int:
        """Return how many jobs the next claim takes: about CLAIM_BUDGET_S of work, 1 to BATCH_SIZE."""
        if self._per_task_s is None:
            return 1  # nothing observed yet: run one before claiming more
        return max(1, min(BATCH_SIZE, int(CLAIM_BUDGET_S / max(self._per_task_s, 1e-6))))

    def _observe(self, job: Job, seconds: float) -> None:
        self._per_task_s = _average(self._per_task_s, seconds)
        task_type = job.description or ""
        self._per_type_s[task_type] = _average(self._per_type_s.get(task_type), seconds)

    def _expected_s(self, job: Job) -> float:
        """Return how long `job` is expected to run; a type never seen here may be slow (infinity)."""
        return self._per_type_s.get(job.description or "", float("inf"))

    def _outranked(self) -> bool:
        """Whether a task was enqueued, since the last claim, in an unpaused queue above the batch's next one.

        An announcement only for paused queues is dropped: claiming again would take the same tasks back.
        """
        head = self._rank[self._batch[0][1].name]
        above = {name for name in self._announced if self._rank[name] < head}
        if not above:
            return False
        if above - paused.paused_names(self.connection):
            return True
        # Replaced, not mutated (the pubsub thread adds); one it adds in between waits for the next claim.
        self._announced = self._announced - above
        return False

    def subscribe(self) -> None:
        super().subscribe()
        assert self.pubsub is not None  # RQ's subscribe() just made it
        self.pubsub.subscribe(**{ENQUEUED_CHANNEL: self._on_enqueued})

    def _on_enqueued(self, message: dict[str, Any]) -> None:
        """Note a queue an enqueue was announced for (runs on RQ's pubsub thread)."""
        data = message.get("data")
        name = data.decode() if isinstance(data, bytes) else str(data)
        if name in self._rank:
            self._announced = self._announced | {name}  # a new set: _outranked may be reading the old one

    def _claim_batch(self, register: bool = False) -> None:
        """Claim about CLAIM_BUDGET_S of work; with `register`, take what was handed over first, and with nothing
        to claim register as idle (core.storage.handoff)."""
        execution_id = f"batch-{self.name}-{time.monotonic_ns()}"
        ttl = self.get_heartbeat_ttl(None)
        # Cleared before the claim: an announcement after this point is for a job the claim may not see.
        self._announced = frozenset()
        want, stamp = self.claim_size(), utcformat(now())
        if register:
            if self._idle_spell is None:  # one ticket for the whole idle spell: a registered one is only renewed
                self._idle_spell = (execution_id, want)
            execution_id, want = self._idle_spell
            self._take(*self._desk.claim_or_register(want, time.time() + ttl, ttl, execution_id, stamp))
        else:
            self._take(execution_id, self._claimer.claim(want, time.time() + ttl, execution_id, self.name, stamp))

    def _take(self, execution_id: str, claimed: claims.Claimed) -> None:
        """Add jobs claimed for this worker (by itself or by a hand-off) to the batch in hand."""
        if not claimed:
            return
        self._idle_spell = None  # the ticket was taken with them
        # The claim made this worker busy for the whole batch: RQ's warm shutdown then waits for the running task
        # instead of interrupting it.
        with self._claim_lock:
            for queue, job_id, fields in claimed:
                job = claims.claimed_job(self.connection, job_id, fields, self.name)
                member = claims.claim_member(job_id, execution_id)
                self._claims[job_id] = (started_key(queue.name), member)
                self._batch.append((job, queue, member))

    # Running it

    def handle_payload(self, message: Any) -> None:
        # A cancel or a purge (or `rq`'s stop-job) names a job this worker claimed: one not started yet is
        # dropped unrun; the running one is interrupted the way its timeout would be, by SIGALRM.
        payload = parse_payload(message)
        job_id = payload.get("job_id")
        if payload.get("command") == places.STOP_JOBS:  # a purge: drop them all before the running one ends
            named = set(payload.get("job_ids") or ())
            with self._claim_lock:
                self._revoked |= {claimed for claimed in named & self._claims.keys() if claimed != self._running}
                running = self._running if self._running in named else None
            if running is not None:
                interrupt(running)
            return
        if payload.get("command") == "stop-job" and job_id in self._claims:
            with self._claim_lock:
                if self._running != job_id:
                    self._revoked.add(job_id)
                    return
            interrupt(job_id)
            return
        super().handle_payload(message)

    def execute_job(self, job: Job, queue: Queue) -> None:
        # Every job reaches here from dequeue_job_and_maintain_ttl, which returns the head of the claimed batch
        # (a job RQ's blocking dequeue popped is claimed first), so there is no standard-route case any more.
        _, _, member = self._batch[0]
        with self._claim_lock:
            revoked = job.id in self._revoked
            self._running = None if revoked else job.id
        if revoked:
            self._finish_claim(job)
            self._revoked.discard(job.id)
            self._record_canceled(job, queue, member, "before it started")
            return
        runner.begin_attempt(job)
        if self._pending_age() + self._expected_s(job) >= FLUSH_AFTER_S:
            # This task may run long: write its attempt first (a kill then counts it, as RQ's own workers do),
            # with the finished ones it would otherwise keep unwritten too long. A short task's attempt is
            # written with its outcome, so a kill within FLUSH_AFTER_S requeues it as never started.
            self._outcomes().pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
            self._flush()
        job.started_at = now()
        timeout = job.timeout or self.queue_class.DEFAULT_TIMEOUT
        started = time.monotonic()
        try:
            with self.death_penalty_class(timeout, JobTimeoutException, job_id=job.id):
                return_value = claims.perform_claimed(job)
        except TaskRevoked:
            self._observe(job, time.monotonic() - started)
            self._finish_claim(job)
            self._flush()
            self._record_canceled(job, queue, member, "while it ran")
            return
        except Exception:
            self._observe(job, time.monotonic() - started)
            self._finish_claim(job)
            self._flush()
            self._fail(job, queue, member)
            return
        runtime_s = time.monotonic() - started
        self._observe(job, runtime_s)
        job.ended_at = now()
        self._finish_claim(job)
        result_ttl = job.get_result_ttl(self.default_result_ttl)
        outcomes = self._outcomes()
        outcomes.success(job, return_value, result_ttl, member, queue)
        self._tally.finished(metrics.task_type_of(job), queue.name, "SUCCESS", runtime_s, metrics.waited_of(job))
        if job.meta.get("workflow_id"):  # release what waits on it, in the same round trip, after its success
            workflows.release_on(outcomes.pipe, job)
        if not self._batch or self._pending_age() >= FLUSH_AFTER_S:
            self._flush()

    def check_for_suspension(self, burst: bool) -> None:
        # RQ checks `rq suspend` (and heartbeats) before every job: five commands. Once a second is enough.
        if time.monotonic() - self._last_suspension_check < 1.0:
            return
        self._last_suspension_check = time.monotonic()
        super().check_for_suspension(burst)

    def _finish_claim(self, job: Job) -> None:
        with self._claim_lock:
            self._running = None
            self._batch.popleft()
            self._claims.pop(job.id, None)
            if not self._batch:
                self.set_state(WorkerStatus.IDLE)

    def _outcomes(self) -> claims.Outcomes:
        """Return the unwritten outcomes, starting a new batch of them (and its age) if there is none."""
        if self._pending is None:
            self._pending = claims.Outcomes(self.connection)
            self._pending_since = time.monotonic()
        return self._pending

    def _pending_age(self) -> float:
        return time.monotonic() - self._pending_since if self._pending is not None else 0.0

    def _flush(self) -> None:
        if self._pending is None:
            return
        outcomes, self._pending = self._pending, None
        if outcomes.count:
            outcomes.pipe.hincrby(self.key, "successful_job_count", outcomes.count)
        self._tally.write(outcomes.pipe)
        self._tally.clear()
        outcomes.write()

    def _record_canceled(self, job: Job, queue: Queue, member: str, when: str) -> None:
        """Write the end of a canceled claimed job: REVOKED, never retried, no failure notification."""
        pipe = self.connection.pipeline(transaction=False)
        cancel.record_canceled(pipe, job, queue, member, job.failure_ttl or DEFAULT_FAILURE_TTL_S)
        revoked = metrics.Tally()
        revoked.finished(metrics.task_type_of(job), queue.name, "REVOKED")
        revoked.write(pipe)
        pipe.execute()
        self.log.info("task %s canceled %s", job.id, when)

    def _fail(self, job: Job, queue: Queue, member: str) -> None:
        """Hand a failed task to RQ's failure handling: callbacks, retries, the failed registry."""
        exc_info = sys.exc_info()
        job.ended_at = now()
        exc_string = "".join(traceback.format_exception(*exc_info))
        try:
            job.execute_failure_callback(self.death_penalty_class, *exc_info)
        except Exception:
            exc_info = sys.exc_info()
            exc_string = "".join(traceback.format_exception(*exc_info))
        self.handle_exception(job, *exc_info)
        self.connection.zrem(queue.started_job_registry.key, member)
        self.handle_job_failure(job=job, queue=queue, exc_string=exc_string)

    # Keeping claims alive, and giving them back

    def _beat_once(self) -> None:
        """Renew the claims of the batch in hand (every task runs claimed: there is no other running task to beat)."""
        with self._claim_lock:
            held = list(self._claims.values())
        if not held:
            return
        expires = time.time() + self.get_heartbeat_ttl(None)
        with suppress(BackendUnavailable, StorageError), redis_errors():
            pipe = self.connection.pipeline(transaction=False)
            claims.renew(pipe, held, expires)
            self.heartbeat(self.job_monitoring_interval + 60, pipeline=pipe)
            pipe.execute()

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        # RQ's loop heartbeats after every job; within a batch once a second is plenty (the TTL is tens of seconds).
        if pipeline is None and time.monotonic() - self._last_beat < 1.0:
            return
        self._last_beat = time.monotonic()
        super().heartbeat(timeout, pipeline)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        self._start_beater()
        try:
            return super().work(*args, **kwargs)
        finally:
            with suppress(BackendUnavailable, StorageError), redis_errors():
                self._flush()
                self._leave_idle()

    def _leave_idle(self) -> None:
        """Leave the idle list, and give back every unstarted claim, with anything handed over meanwhile."""
        self._take(*self._desk.leave())
        self._release_unstarted("the worker is stopping")

    def _release_unstarted(self, why: str) -> None:
        """Put claimed jobs that never started back at the head of their queues, in their order."""
        with self._claim_lock:
            unstarted = list(self._batch)
            self._batch.clear()
            self._claims.clear()
        if not unstarted:
            return
        pipe = self.connection.pipeline(transaction=True)
        for job, queue, member in reversed(unstarted):
            claims.release(pipe, job, queue, member)
        pipe.execute()
        self.log.info("returned %s unstarted tasks to their queues: %s", len(unstarted), why)
