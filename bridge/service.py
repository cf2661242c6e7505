"""The bridge process: move tasks from the RabbitMQ ingress queue into RQ, a batch at a time.

Guarantees: a message is acked only after Redis holds its job (at-least-once
into RQ); a redelivered message finds its job by task id (a workflow by its
id) and creates nothing (so no task runs twice because of the bridge); poison messages go to the
dead-letter queue with their reason. With Redis down the batch is held, unacked,
and retried with backoff; with RabbitMQ down the bridge reconnects with backoff.
SIGTERM or SIGINT: the batch in hand is finished and acked, then it exits.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import FrameType

import redis

from bridge import message
from bridge.amqp.consumer import Consumer, Delivery
from bridge.amqp.topology import Topology
from core import accepted, registry
from core.connection import redis_errors
from core.errors import BackendUnavailable, IngressUnavailable, PoisonMessage, StorageError, UnknownTaskType
from core.model import TaskRequest
from core.settings import Settings
from core.storage import workflows
from core.storage.enqueue import enqueue_batch
from core.workflow import Plan

log = logging.getLogger("taskrelay.bridge")

BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0
"""Reconnect and Redis retry waits grow from BACKOFF_START_S, doubling, up to this (seconds)."""
MARKED_WAIT_S = 0.05
"""After a small batch (under MARKED_WAIT_BELOW) of marked messages only (INGRESS_MODE=dual: their tasks are in RQ
already), the bridge waits this long before its next batch, in seconds, so at a steady rate it takes marks a batch
at a time instead of waking for each message: CPU it leaves to the API, the workers and RabbitMQ on a shared host."""
MARKED_WAIT_BELOW = 50
"""A batch this big or bigger means messages are waiting: the bridge goes on at once."""
STATS_EVERY_S = 30.0
"""How often the bridge logs its counters, in seconds."""
TRIM_EVERY_S = 3600.0
"""Least time between two drops of accepted records older than accepted.PENDING_TTL_S (publishes that failed), in
seconds: checked when the bridge connects and after a batch, so an idle bridge does not check."""


@dataclass
class Counters:
    """What the bridge has done since it started."""

    moved: int = 0
    in_redis: int = 0
    workflows: int = 0
    duplicates: int = 0
    poisoned: int = 0
    batches: int = 0
    reconnects: int = 0
    redis_waits: int = 0
    started: float = field(default_factory=time.monotonic)


class Bridge:
    """Consume the ingress queue and enqueue into RQ until stopped."""

    def __init__(self, settings: Settings, connection: redis.Redis) -> None:
        self.settings = settings
        self.connection = connection
        self.topology = Topology(settings.ingress_queue)
        self.counters = Counters()
        self._stopping = False
        self._last_stats = time.monotonic()
        self._last_trim = -TRIM_EVERY_S  # trim once at start

    def stop(self, *_: object) -> None:
        """Ask the bridge to finish its batch and exit."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        """Stop cleanly on SIGTERM and SIGINT."""

        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %s: finishing the current batch, then exiting", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> None:
        """Move tasks until stopped, reconnecting to RabbitMQ with backoff."""
        backoff = BACKOFF_START_S
        while not self._stopping:
            consumer = Consumer(self.settings.rabbitmq_url, self.topology, prefetch=self.settings.bridge_batch_size)
            try:
                consumer.connect()
                log.info("consuming %s", self.topology.queue)
                backoff = BACKOFF_START_S
                batches = consumer.batches(
                    self.settings.bridge_batch_size, self.settings.bridge_batch_wait_s, lambda: self._stopping
                )
                self._maybe_trim()
                for batch in batches:
                    self.handle(batch, consumer)
                    self._maybe_log_stats()
                    self._maybe_trim()
                    small = len(batch) < MARKED_WAIT_BELOW
                    if small and all(_in_redis(delivery) for delivery in batch) and not self._stopping:
                        consumer.sleep(MARKED_WAIT_S)
            except IngressUnavailable as exc:
                self.counters.reconnects += 1
                log.warning("RabbitMQ unavailable (%s); reconnecting in %.1f s", exc, backoff)
                time.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
            finally:
                consumer.close()
        self._log_stats()
        log.info("bridge stopped")

    def handle(self, batch: list[Delivery], consumer: Consumer) -> bool:
        """Move one batch into RQ and ack it; return False if stopped before Redis took it (nothing acked).

        The batch's tasks go in one transaction, then each workflow in one of its own.
        """
        requests: list[TaskRequest] = []
        marked: list[TaskRequest] = []  # the API enqueued these itself (INGRESS_MODE=dual)
        plans: list[Plan] = []
        for delivery in batch:
            try:
                decoded = self._decode(delivery)
            except PoisonMessage as exc:
                consumer.dead_letter(delivery, str(exc))
                self.counters.poisoned += 1
                log.error("poison message dead-lettered: %s", exc, extra={"task_id": _message_id(delivery)})
                continue
            if isinstance(decoded, Plan):
                plans.append(decoded)
            elif _in_redis(delivery):
                marked.append(decoded)
            else:
                requests.append(decoded)
        tasks = len(requests) + len(marked)
        if tasks and not self._store(lambda: self._enqueue(requests, marked), consumer, f"{tasks} tasks"):
            return False
        for plan in plans:
            if not self._store(partial(self._create, plan), consumer, f"workflow {plan.workflow_id}"):
                return False
        consumer.ack_through(batch[-1].tag)
        self.counters.batches += 1
        return True

    def _decode(self, delivery: Delivery) -> TaskRequest | Plan:
        envelope = message.decode(delivery.body)
        try:
            if isinstance(envelope, message.WorkflowEnvelope):
                for step in envelope.plan.steps:
                    registry.get(step.request.task_type)
                return envelope.plan
            registry.get(envelope.task_type)
        except UnknownTaskType as exc:
            raise PoisonMessage(str(exc)) from None
        return envelope.to_request()

    def _enqueue(self, requests: list[TaskRequest], marked: list[TaskRequest]) -> None:
        """Enqueue `requests`, and those of `marked` whose mark the API's enqueue did not leave (one round trip
        more when there are marked ones)."""
        if marked:
            left = accepted.take_marks(self.connection, [r.task_id for r in marked])
            self.counters.in_redis += len(marked) - len(left)
            requests = requests + [r for r in marked if r.task_id in left]
        if not requests:
            return
        created = enqueue_batch(
            self.connection, self.settings, requests, also=lambda pipe: accepted.forget(pipe, requests)
        )
        self.counters.moved += len(created)
        self.counters.duplicates += len(requests) - len(created)

    def _create(self, plan: Plan) -> None:
        if workflows.create(self.connection, self.settings, plan):
            self.counters.workflows += 1
        else:
            self.counters.duplicates += 1

    def _store(self, write: Callable[[], None], consumer: Consumer, what: str) -> bool:
        """Run `write` (one transaction), waiting out a Redis outage; False if stopped meanwhile."""
        backoff = BACKOFF_START_S
        while True:
            try:
                with redis_errors():
                    write()
            except BackendUnavailable as exc:
                self.counters.redis_waits += 1
                log.warning("Redis unavailable (%s); holding %s, retrying in %.1f s", exc, what, backoff)
                if self._stopping:
                    return False
                consumer.sleep(backoff)
                backoff = min(BACKOFF_MAX_S, backoff * 2)
                continue
            return True

    def _maybe_trim(self) -> None:
        if time.monotonic() - self._last_trim < TRIM_EVERY_S:
            return
        self._last_trim = time.monotonic()
        try:
            with redis_errors():
                dropped = accepted.trim(self.connection)
        except (BackendUnavailable, StorageError) as exc:
            log.warning("could not trim stale accepted records: %s", exc)
            return
        if dropped:
            log.warning(
                "dropped %s accepted records older than %s s (their publish failed)", dropped, accepted.PENDING_TTL_S
            )

    def _maybe_log_stats(self) -> None:
        if time.monotonic() - self._last_stats >= STATS_EVERY_S:
            self._log_stats()

    def _log_stats(self) -> None:
        self._last_stats = time.monotonic()
        c = self.counters
        log.info(
            "bridge counters: moved=%s in_redis=%s workflows=%s duplicates=%s poisoned=%s batches=%s reconnects=%s "
            "redis_waits=%s",
            c.moved,
            c.in_redis,
            c.workflows,
            c.duplicates,
            c.poisoned,
            c.batches,
            c.reconnects,
            c.redis_waits,
        )


def _in_redis(delivery: Delivery) -> bool:
    """Whether the API enqueued this message's task into RQ itself (message.IN_REDIS_HEADER)."""
    headers = getattr(delivery.properties, "headers", None)
    return bool(headers and headers.get(message.IN_REDIS_HEADER))


def _message_id(delivery: Delivery) -> str | None:
    return getattr(delivery.properties, "message_id", None)
