"""How the API hands an accepted task on: straight into RQ, or through RabbitMQ to the bridge."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol, TypeVar

import redis

from app.errors import IngressNotConfigured
from app.group_commit import GroupCommit, Unanswered, Withdrawn
from bridge.message import Outgoing, TaskEnvelope, WorkflowEnvelope
from core import accepted
from core.connection import redis_errors
from core.errors import BackendUnavailable, IngressUnavailable, StorageError
from core.model import TaskRequest
from core.settings import Settings
from core.storage import metrics, workflows
from core.storage.enqueue import enqueue_batch
from core.workflow import Plan

log = logging.getLogger("taskrelay.ingress")
T = TypeVar("T")

REDIS_PAUSE_S = 1.0
"""After Redis failed to answer, an API process leaves it alone for this long where it has another way:
best-effort records are skipped, and `redis-first` publishes straight to RabbitMQ.

Each try against a Redis that is down waits out the client's bounded retries
(~0.7 s): without the pause every POST would, though RabbitMQ accepts at once.
"""


RABBITMQ_PAUSE_S = 1.0
"""After RabbitMQ failed to answer, a `dual` API process queues tasks in Redis only for this long (one that is
frozen or cut off without a reset makes each publish wait out CONFIRM_TIMEOUT_S)."""

PUBLISH_STALL_S = 1.0
"""A `dual` publish still unconfirmed after this long counts as RabbitMQ not answering: for the tasks that come
meanwhile, and for those waiting on it, which are answered from Redis (a confirm takes about a millisecond)."""


SKIPPED = "RabbitMQ failed to answer moments ago"
"""Why a `dual` publish was not tried (RABBITMQ_PAUSE_S)."""


class Pause:
    """When this API process last saw a server fail to answer, and whether that was under `seconds` ago."""

    def __init__(self, seconds: float = REDIS_PAUSE_S) -> None:
        self.seconds = seconds
        self.clock: Callable[[], float] = time.monotonic
        self._until = 0.0

    def active(self) -> bool:
        return self.clock() < self._until

    def start(self) -> None:
        self._until = self.clock() + self.seconds


NOT_CONFIGURED = "the RabbitMQ ingress is not configured (RABBITMQ_URL is not set): there are no dead letters"


class Ingress(Protocol):
    """Where POST /api/tasks sends a validated task."""

    description: str
    commits: GroupCommit[TaskRequest]
    """The group commit every submit goes through; `commits.observe()` sees each flush."""

    def submit(self, request: TaskRequest) -> None:
        """Accept `request` durably or raise BackendUnavailable (the API answers 503)."""

    def submit_workflow(self, plan: Plan) -> None:
        """Accept a whole workflow durably (created at once, or one message) or raise BackendUnavailable."""

    def purge(self) -> int:
        """Drop tasks still waiting in the ingress; return how many."""

    def dead_letters(self, limit: int) -> dict[str, Any]:
        """Return {"count", "messages": [{"task_id", "reason", "body"}]}: the first `limit` dead letters."""

    def replay_dead_letters(self) -> int:
        """Re-publish the dead letters to the ingress queue; return how many."""

    def message_counts(self) -> dict[str, int]:
        """Return the messages waiting in the ingress queues by name ({} without RabbitMQ); IngressUnavailable."""

    def close(self) -> None:
        """Release connections (the app is shutting down)."""


class DirectIngress:
    """Enqueue into RQ from the API process (no RabbitMQ).

    Requests submitted at the same time by the threads of one process share
    one MULTI/EXEC (GroupCommit); each answers once its job is in Redis. It is
    the bridge's WATCHed enqueue: a transaction whose reply was lost with the
    connection is checked, never blindly sent again (that would queue a job twice).
    """

    description = "direct into RQ"

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self.commits: GroupCommit[TaskRequest] = GroupCommit(self._flush)

    def submit(self, request: TaskRequest) -> None:
        self.commits.submit(request)

    def _flush(self, requests: list[TaskRequest]) -> list[BaseException | None]:
        counted = metrics.Tally.of_submitted(requests)  # in the enqueue's own transaction: no round trip of its own
        with redis_errors():
            enqueue_batch(self.connection, self.settings, requests, also=counted.write)
        return [None] * len(requests)

    def submit_workflow(self, plan: Plan) -> None:
        with redis_errors():
            workflows.create(self.connection, self.settings, plan)

    def purge(self) -> int:
        return 0

    def dead_letters(self, limit: int) -> dict[str, Any]:
        raise IngressNotConfigured(NOT_CONFIGURED)

    def replay_dead_letters(self) -> int:
        raise IngressNotConfigured(NOT_CONFIGURED)

    def message_counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


class RabbitIngress:
    """Publish to the durable ingress queue with confirms; the bridge enqueues into RQ.

    The task is recorded in Redis as accepted first, so it is PENDING from the
    moment the API answers. That record is best effort: with Redis down the
    task is still accepted (it waits in RabbitMQ), it just cannot be read yet.
    After a record failed, the next REDIS_PAUSE_S skip them, so accepting
    stays as fast as RabbitMQ while Redis is down.

    Requests submitted at the same time by the threads of one process share a
    flush (GroupCommit): one Redis round trip records them all, one write
    publishes them all and their confirms are awaited together. Each request
    still answers only after its own message was confirmed.
    """

    def __init__(self, connection: redis.Redis, settings: Settings, pause: Pause | None = None) -> None:
        from bridge.amqp.publisher import Publisher  # pika is loaded only where RabbitMQ is used
        from bridge.amqp.topology import Topology

        self.connection = connection
        self.publisher = Publisher(settings.rabbitmq_url, Topology(settings.ingress_queue))
        self.commits: GroupCommit[TaskRequest] = GroupCommit(self._flush)
        self.redis_pause = pause or Pause()
        self.description = f"RabbitMQ queue {settings.ingress_queue!r}, moved into RQ by the bridge"

    def submit(self, request: TaskRequest) -> None:
        self.commits.submit(request)

    def _flush(self, requests: list[TaskRequest]) -> list[BaseException | None]:
        counted = metrics.Tally.of_submitted(requests)  # counted at accept time (the bridge counts nothing)
        recorded = self._try(
            lambda: accepted.remember(self.connection, requests, also=counted.write),
            "record",
            [r.task_id for r in requests],
        )
        try:
            messages = [Outgoing(TaskEnvelope.from_request(r).encode(), r.priority, r.task_id) for r in requests]
            refusals = self.publisher.publish_many(messages)
        except Exception:
            if recorded:
                self._try(lambda: self._unrecord(requests), "unrecord", [r.task_id for r in requests])
            raise
        refused = [r for r, why in zip(requests, refusals, strict=True) if why is not None]
        if refused and recorded:
            self._try(lambda: self._unrecord(refused), "unrecord", [r.task_id for r in refused])
        return [None if why is None else IngressUnavailable(why) for why in refusals]

    def _unrecord(self, requests: list[TaskRequest]) -> None:
        """Forget the accepted records of `requests`, which were not published, and take back their counts.

        Only records still theirs go: another attempt at the same id may have recorded and published it.
        """
        pipe = self.connection.pipeline(transaction=False)
        accepted.forget_own(pipe, requests)
        metrics.forget_submitted(pipe, requests)
        pipe.execute()

    def submit_workflow(self, plan: Plan) -> None:
        """Record the workflow as accepted (best effort, as for a task), then publish it as one message."""
        recorded = self._try(lambda: workflows.remember(self.connection, plan), "record", [plan.workflow_id])
        try:
            try:
                self.publisher.publish(WorkflowEnvelope(plan).encode(), plan.priority, plan.workflow_id)
            except IngressUnavailable as exc:
                self._not_published(plan, exc)
        except Exception:
            if recorded:
                self._try(lambda: workflows.forget(self.connection, plan.workflow_id), "unrecord", [plan.workflow_id])
            raise

    def _not_published(self, plan: Plan, exc: IngressUnavailable) -> None:
        """RabbitMQ did not take `plan`: its request fails (a 503)."""
        raise exc

    def purge(self) -> int:
        return self.publisher.purge()

    def dead_letters(self, limit: int) -> dict[str, Any]:
        from bridge.amqp import dead_letters

        count, letters = dead_letters.peek(self.publisher.url, self.publisher.topology, limit)
        return {"count": count, "messages": [asdict(letter) for letter in letters]}

    def replay_dead_letters(self) -> int:
        from bridge.amqp import dead_letters

        return dead_letters.replay(self.publisher.url, self.publisher.topology)

    def message_counts(self) -> dict[str, int]:
        return self.publisher.message_counts()

    def close(self) -> None:
        self.publisher.close()

    def _try(self, action: Callable[[], object], what: str, ids: list[str]) -> bool:
        """Run a best-effort write of accepted records; False if it failed or Redis failed moments ago."""
        if self.redis_pause.active():
            log.debug("Redis failed moments ago: did not %s %d accepted items", what, len(ids), extra={"task_ids": ids})
            return False
        try:
            with redis_errors():
                action()
            return True
        except (BackendUnavailable, StorageError) as exc:
            if isinstance(exc, BackendUnavailable):
                self.redis_pause.start()
            log.warning("could not %s %d accepted items in Redis: %s", what, len(ids), exc, extra={"task_ids": ids})
            return False


class RedisFirstIngress:
    """Enqueue into RQ from the API process; while Redis does not answer, publish to RabbitMQ instead
    (INGRESS_MODE=redis-first).

    Each flush goes into Redis as with DirectIngress, so a task starts as soon
    as without RabbitMQ. When Redis does not answer (after the client's bounded
    retries), the same tasks are published as RabbitIngress does and the
    bridge moves them in once Redis is back; for the next REDIS_PAUSE_S this
    process publishes at once. A 202 therefore means: in Redis (on disk only
    with `appendfsync always`), or confirmed by RabbitMQ. An enqueue whose
    reply was lost may have gone in before the publish: the bridge then finds
    the job and skips it, as for any redelivery.
    """

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.pause = Pause()
        self.direct = DirectIngress(connection, settings)
        self.rabbit = RabbitIngress(connection, settings, self.pause)
        self.commits: GroupCommit[TaskRequest] = GroupCommit(self._flush)
        self.description = f"direct into RQ; RabbitMQ queue {settings.ingress_queue!r} while Redis does not answer"

    def submit(self, request: TaskRequest) -> None:
        self.commits.submit(request)

    def _flush(self, requests: list[TaskRequest]) -> list[BaseException | None]:
        return self._redis_first(
            lambda: self.direct._flush(requests), lambda: self.rabbit._flush(requests), [r.task_id for r in requests]
        )

    def submit_workflow(self, plan: Plan) -> None:
        self._redis_first(
            lambda: self.direct.submit_workflow(plan), lambda: self.rabbit.submit_workflow(plan), [plan.workflow_id]
        )

    def _redis_first(self, into_redis: Callable[[], T], to_rabbitmq: Callable[[], T], ids: list[str]) -> T:
        """Run `into_redis`, unless Redis failed moments ago; when it does not answer, run `to_rabbitmq`."""
        if not self.pause.active():
            try:
                return into_redis()
            except BackendUnavailable as exc:
                self.pause.start()
                log.warning(
                    "Redis did not take %d items (%s): publishing them to RabbitMQ",
                    len(ids),
                    exc,
                    extra={"task_ids": ids},
                )
        return to_rabbitmq()

    def purge(self) -> int:
        return self.rabbit.purge()

    def dead_letters(self, limit: int) -> dict[str, Any]:
        return self.rabbit.dead_letters(limit)

    def replay_dead_letters(self) -> int:
        return self.rabbit.replay_dead_letters()

    def message_counts(self) -> dict[str, int]:
        return self.rabbit.message_counts()

    def close(self) -> None:
        self.rabbit.close()


RATE_WINDOW_S = 0.25
"""How often a DualIngress measures its submit rate, in seconds."""


class SubmitRate:
    """Tasks per second one API process submitted over its last whole RATE_WINDOW_S window (0 until one ended)."""

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.monotonic
        self._start = self.clock()
        self._count = 0
        self.per_s = 0.0

    def add(self, tasks: int) -> float:
        """Count `tasks` submitted now; return the rate."""
        now = self.clock()
        if now - self._start >= RATE_WINDOW_S:
            self.per_s = self._count / (now - self._start)
            self._start, self._count = now, 0
        self._count += tasks
        return self.per_s


class _Routed(Exception):
    """DualIngress's first step did not enqueue the task into Redis: a subclass says what it did instead."""


class _NotInRedis(_Routed):
    """Redis failed (now, or moments ago): the task is to be published unflagged."""


class _Bridged(_Routed):
    """Over DUAL_MAX_RATE: the task was recorded and published as in `rabbitmq` mode, and confirmed."""


class _InRedisOnly(_Routed):
    """Over DUAL_MAX_RATE, RabbitMQ did not take the task: it was enqueued into Redis, unmarked (nothing to publish)."""


class DualIngress(RabbitIngress):
    """Enqueue into RQ from the API process and publish every task to RabbitMQ too (INGRESS_MODE=dual, the
    default with RABBITMQ_URL).

    Each task goes into Redis as with DirectIngress, so it starts as soon as without RabbitMQ, and the same
    transaction marks it (core.accepted.mark_in_redis). Then it is published as RabbitIngress publishes,
    flagged (IN_REDIS_HEADER), and its request answers once RabbitMQ confirmed it. The bridge removes the mark
    and creates nothing; a message whose mark is missing (Redis failed, or lost the enqueue in a crash before
    the bridge got to the message) it enqueues as in `rabbitmq` mode.

    The two steps are two group commits (`commits`, then `publishes`): a request that arrives while another
    waits for RabbitMQ's confirm is enqueued at once, not after that wait.

    Above `settings.dual_max_rate` submits per second in this process, the first step submits as `rabbitmq`
    mode does instead (an accepted record, a confirmed publish; the bridge enqueues in batches): under load
    that costs Redis and this process less per task than an enqueue per flush, and a task's wait is then
    mostly the queue's anyway. It returns to enqueueing once the rate falls back.

    A 202 therefore means: confirmed by RabbitMQ, and queued in RQ unless Redis failed; while RabbitMQ does
    not take the task, queued in RQ only (as a redis-first 202). With both failing, 503. Workflows go as in
    `rabbitmq` mode (one message, recorded, created by the bridge); one RabbitMQ does not take is created in
    Redis by the API, as with direct ingress.

    RabbitMQ failing to answer costs little: for RABBITMQ_PAUSE_S after a failure it is not tried for what is in
    Redis, and a request whose task is in Redis waits at most PUBLISH_STALL_S for its confirm (only the request
    leading a publish waits for the publisher's own timeout).
    """

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        super().__init__(connection, settings)  # its `commits` flushes with _flush below: the first step
        self.settings = settings
        self.rate = SubmitRate()
        self.rabbitmq_pause = Pause(RABBITMQ_PAUSE_S)
        self.publishing_since: float | None = None
        """When the publish in progress began (None: none is)."""
        self.publishes: GroupCommit[Outgoing] = GroupCommit(self._publish)
        self.description = f"into RQ and RabbitMQ queue {settings.ingress_queue!r} at once; the bridge fills gaps"

    def submit(self, request: TaskRequest) -> None:
        try:
            self.commits.submit(request)
            in_redis = True
        except (_Bridged, _InRedisOnly):
            return
        except _NotInRedis:
            in_redis = False
        envelope = TaskEnvelope.from_request(request).encode()
        outgoing = Outgoing(envelope, request.priority, request.task_id, in_redis)
        if not in_redis:
            self.publishes.submit(outgoing)  # RabbitMQ is its only way: its answer is awaited
            return
        try:
            self.publishes.submit(outgoing, wait_s=PUBLISH_STALL_S)
        except Withdrawn:  # queued behind a publish RabbitMQ has not confirmed for PUBLISH_STALL_S: not sent
            self._try(lambda: accepted.unmark(self.connection, [request.task_id]), "unmark", [request.task_id])
        except Unanswered:  # in that publish: its outcome removes the mark if RabbitMQ does not take it
            pass

    def _flush(self, requests: list[TaskRequest]) -> list[BaseException | None]:
        """Enqueue `requests` into RQ, marked, in one transaction; each gets _NotInRedis if Redis failed (now, or
        moments ago). Over the rate limit: record and publish them as RabbitIngress does (_Bridged, or its error)."""
        if self._rabbitmq_failing():
            if self._enqueue(requests, marked=False):
                log.debug(
                    "RabbitMQ is not answering: %d tasks queued in Redis only",
                    len(requests),
                    extra={"task_ids": [r.task_id for r in requests]},
                )
                return [_InRedisOnly() for _ in requests]
            return [_NotInRedis() for _ in requests]  # then RabbitMQ is their only way: it is tried
        limit = self.settings.dual_max_rate
        if self.rate.add(len(requests)) > limit > 0:
            return self._bridge(requests)
        if self._enqueue(requests, marked=True):
            return [None] * len(requests)
        return [_NotInRedis() for _ in requests]

    def _enqueue(self, requests: list[TaskRequest], marked: bool) -> bool:
        """Enqueue `requests` into RQ in one transaction (`marked`: with their marks); False if Redis failed (now, or
        moments ago)."""
        counted = metrics.Tally.of_submitted(requests)
        ids = [r.task_id for r in requests]

        def also(pipe: Any) -> None:
            counted.write(pipe)
            if marked:
                accepted.mark_in_redis(pipe, ids)

        return self._try(lambda: enqueue_batch(self.connection, self.settings, requests, also=also), "enqueue", ids)

    def _bridge(self, requests: list[TaskRequest]) -> list[BaseException | None]:
        """Record and publish `requests` as RabbitIngress does (_Bridged once confirmed); those RabbitMQ does not take
        are enqueued into Redis unmarked (_InRedisOnly), or fail if Redis fails too."""
        try:
            outcomes: list[BaseException | None] = super()._flush(requests)
        except IngressUnavailable as exc:
            self._rabbitmq_failed(exc)
            outcomes = [exc] * len(requests)
        unpublished = [r for r, outcome in zip(requests, outcomes, strict=True) if outcome is not None]
        if unpublished:
            log.warning(
                "RabbitMQ did not take %d tasks (%s): enqueueing them into Redis",
                len(unpublished),
                next(outcome for outcome in outcomes if outcome is not None),
                extra={"task_ids": [r.task_id for r in unpublished]},
            )
            if self._enqueue(unpublished, marked=False):
                return [_Bridged() if outcome is None else _InRedisOnly() for outcome in outcomes]
        return [outcome or _Bridged() for outcome in outcomes]

    def _publish(self, messages: list[Outgoing]) -> list[BaseException | None]:
        """Publish `messages`; one RabbitMQ does not take fails its request unless its task is in Redis (then its
        mark is removed: no message will come for it). Within RABBITMQ_PAUSE_S of a failure, those in Redis are
        not tried (each try at a RabbitMQ that does not answer waits out a timeout)."""
        paused = self.rabbitmq_pause.active()
        refusals: list[str | None] = [SKIPPED if paused and m.in_redis else None for m in messages]
        tried = [i for i, why in enumerate(refusals) if why is None]
        if tried:
            self.publishing_since = self.rabbitmq_pause.clock()
            try:
                answers = self.publisher.publish_many([messages[i] for i in tried])
            except IngressUnavailable as exc:
                self._rabbitmq_failed(exc)
                answers = [str(exc)] * len(tried)
            finally:
                self.publishing_since = None
            for i, why in zip(tried, answers, strict=True):
                refusals[i] = why
        kept = [m.message_id for m, why in zip(messages, refusals, strict=True) if why is not None and m.in_redis]
        if kept:
            log.warning(
                "RabbitMQ did not take %d tasks (%s): they are queued in Redis only",
                len(kept),
                next(why for why in refusals if why is not None),
                extra={"task_ids": kept},
            )
            self._try(lambda: accepted.unmark(self.connection, kept), "unmark", kept)
        return [
            IngressUnavailable(why) if why is not None and not m.in_redis else None
            for m, why in zip(messages, refusals, strict=True)
        ]

    def submit_workflow(self, plan: Plan) -> None:
        """As in `rabbitmq` mode (see _not_published), but while RabbitMQ is failing, created in Redis at once."""
        if self._rabbitmq_failing():
            try:
                with redis_errors():
                    workflows.create(self.connection, self.settings, plan)
                return
            except BackendUnavailable:
                pass  # RabbitMQ is its only way: it is tried
        super().submit_workflow(plan)

    def _rabbitmq_failing(self) -> bool:
        """Whether RabbitMQ failed to answer under RABBITMQ_PAUSE_S ago, or a publish has waited over
        PUBLISH_STALL_S for its confirm."""
        since = self.publishing_since
        pause = self.rabbitmq_pause
        return pause.active() or (since is not None and pause.clock() - since > PUBLISH_STALL_S)

    def _rabbitmq_failed(self, exc: IngressUnavailable) -> None:
        if not self.rabbitmq_pause.active():
            log.warning("RabbitMQ did not answer (%s): tasks go into Redis only for %.0f s", exc, RABBITMQ_PAUSE_S)
        self.rabbitmq_pause.start()

    def _not_published(self, plan: Plan, exc: IngressUnavailable) -> None:
        """RabbitMQ did not take `plan`: create it in Redis, as direct ingress does (its accepted record, if any, is
        replaced; a publish that did arrive after all finds the workflow there and creates nothing)."""
        log.warning(
            "RabbitMQ did not take workflow %s (%s): creating it in Redis",
            plan.workflow_id,
            exc,
            extra={"workflow_id": plan.workflow_id},
        )
        with redis_errors():
            workflows.create(self.connection, self.settings, plan)

    def purge(self) -> int:
        """Purge the ingress queue; return how many of its tasks were only there. A marked message's task is
        queued in RQ too (the purge counts it there), so the marks are dropped and left out of the count."""
        purged = self.publisher.purge()
        with redis_errors():
            marked = accepted.drop_marks(self.connection)
        return max(0, purged - marked)


def build(connection: redis.Redis, settings: Settings) -> Ingress:
    """Return the ingress the settings ask for: with RABBITMQ_URL, RabbitMQ (or Redis first, or both), else
    direct."""
    if settings.rabbitmq_url:
        if settings.ingress_mode == "redis-first":
            return RedisFirstIngress(connection, settings)
        if settings.ingress_mode == "dual":
            return DualIngress(connection, settings)
        return RabbitIngress(connection, settings)
    return DirectIngress(connection, settings)
