"""Everything RabbitMQ: topology, a confirming publisher and a batching consumer. The only module that imports pika.

Topology, all durable, named after INGRESS_QUEUE (default `taskrelay.ingress`):

    exchange <q> (direct) --"task"--> queue <q>  (x-max-priority 3, dead-letters to <q>.dlx)
    exchange <q>.dlx (fanout) ------> queue <q>.dead

Messages are persistent and carry an AMQP priority (high 3, normal 2, low 1), so
a high task overtakes every low one still waiting in the queue; what a bridge
already prefetched (one batch) is ahead of it. pika errors never leave this
module: after bounded retries they become IngressUnavailable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from jobs.errors import BackendUnavailable

log = logging.getLogger("taskrelay.amqp")

AMQP_PRIORITY = {"high": 3, "normal": 2, "low": 1}
MAX_PRIORITY = 3
ROUTING_KEY = "task"
REASON_HEADER = "x-taskrelay-reason"
CONNECT_TIMEOUT_S = 5.0
"""Give up one connection attempt to RabbitMQ after this many seconds."""
HEARTBEAT_S = 30
"""AMQP heartbeat the consumer asks for, in seconds."""
IDLE_POLL_S = 0.2
"""How often an idle bridge looks up to check whether it was asked to stop, in seconds."""
PUBLISH_TRIES = 2
"""A publish that fails on a broken connection is retried once on a fresh one."""

T = TypeVar("T")
TRANSPORT_ERRORS = (pika.exceptions.AMQPError, OSError)


class IngressUnavailable(BackendUnavailable):
    """RabbitMQ did not answer, refused the connection, or did not confirm a message."""


@dataclass(frozen=True)
class Topology:
    """The names of the ingress exchange, queue and their dead-letter pair."""

    queue: str

    @property
    def exchange(self) -> str:
        return self.queue

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.queue}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"

    def declare(self, channel: BlockingChannel) -> None:
        """Declare exchanges, queues and bindings (idempotent)."""
        channel.exchange_declare(self.dead_letter_exchange, exchange_type="fanout", durable=True)
        channel.queue_declare(self.dead_letter_queue, durable=True)
        channel.queue_bind(self.dead_letter_queue, self.dead_letter_exchange)
        channel.exchange_declare(self.exchange, exchange_type="direct", durable=True)
        arguments = {"x-max-priority": MAX_PRIORITY, "x-dead-letter-exchange": self.dead_letter_exchange}
        channel.queue_declare(self.queue, durable=True, arguments=arguments)
        channel.queue_bind(self.queue, self.exchange, routing_key=ROUTING_KEY)


def _parameters(url: str, heartbeat_s: int | None = None) -> pika.URLParameters:
    parameters = pika.URLParameters(url)
    parameters.socket_timeout = CONNECT_TIMEOUT_S
    parameters.stack_timeout = CONNECT_TIMEOUT_S
    parameters.blocked_connection_timeout = CONNECT_TIMEOUT_S * 2
    parameters.connection_attempts = 1
    if heartbeat_s is not None:
        parameters.heartbeat = heartbeat_s
    return parameters


def _close_quietly(connection: pika.BlockingConnection | None) -> None:
    if connection is not None and connection.is_open:
        with contextlib.suppress(*TRANSPORT_ERRORS):
            connection.close()


def _redact(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


class Publisher:
    """Publish task envelopes with publisher confirms over one connection per process.

    Thread-safe: gunicorn threads share the connection under a lock, each
    publish waiting for its own confirm. (A pipelined variant on pika's
    SelectConnection in an I/O thread was measured slower in this deployment:
    see the README's ingress benchmark.) The connection is opened on first use
    and reopened when found broken, so it survives RabbitMQ restarts and frozen
    Lambda containers; a message caught in a broken connection is published once
    more on the new one (the bridge de-duplicates by task id).
    """

    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url
        self.topology = topology
        self._lock = threading.Lock()
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def _open(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self._close()
        self._connection = pika.BlockingConnection(_parameters(self.url))
        channel = self._connection.channel()
        self.topology.declare(channel)
        channel.confirm_delivery()
        self._channel = channel
        return channel

    def _close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        _close_quietly(connection)

    def _call(self, action: Callable[[BlockingChannel], T], what: str) -> T:
        with self._lock:
            for attempt in range(1, PUBLISH_TRIES + 1):
                try:
                    return action(self._open())
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                    raise IngressUnavailable(f"RabbitMQ did not accept the message ({exc.__class__.__name__})") from exc
                except TRANSPORT_ERRORS as exc:
                    self._close()
                    if attempt == PUBLISH_TRIES:
                        raise IngressUnavailable(
                            f"RabbitMQ is not answering at {_redact(self.url)} ({exc.__class__.__name__})"
                        ) from exc
                    log.warning("RabbitMQ connection broken during %s; reconnecting", what)
        raise AssertionError("unreachable")

    def publish(self, body: bytes, priority: str, message_id: str) -> None:
        """Publish one persistent message and return once RabbitMQ confirmed it; raise IngressUnavailable."""
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            priority=AMQP_PRIORITY[priority],
            message_id=message_id,
            content_type="application/json",
        )

        def publish(channel: BlockingChannel) -> None:
            channel.basic_publish(self.topology.exchange, ROUTING_KEY, body, properties, mandatory=True)

        self._call(publish, "publish")

    def purge(self) -> int:
        """Drop every message waiting in the ingress queue; return how many."""

        def purge(channel: BlockingChannel) -> int:
            return int(channel.queue_purge(self.topology.queue).method.message_count)

        return self._call(purge, "purge")

    def close(self) -> None:
        """Close the connection, if open."""
        with self._lock:
            self._close()


@dataclass(frozen=True)
class Delivery:
    """One message handed to the bridge."""

    tag: int
    body: bytes
    redelivered: bool
    properties: Any


class Consumer:
    """Take messages off the ingress queue in batches with manual acks and a prefetch window."""

    def __init__(self, url: str, topology: Topology, prefetch: int) -> None:
        self.url = url
        self.topology = topology
        self.prefetch = prefetch
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None

    def connect(self) -> None:
        """Open the connection and channel and declare the topology; raise IngressUnavailable."""
        try:
            self._connection = pika.BlockingConnection(_parameters(self.url, HEARTBEAT_S))
            channel = self._connection.channel()
            self.topology.declare(channel)
            channel.basic_qos(prefetch_count=self.prefetch)
            channel.confirm_delivery()  # for dead-lettering: the poison copy must be safe before the ack
            self._channel = channel
        except TRANSPORT_ERRORS as exc:
            self.close()
            raise IngressUnavailable(f"cannot consume from RabbitMQ at {_redact(self.url)}: {exc!r}") from exc

    def batches(self, max_size: int, max_wait_s: float, stopping: Callable[[], bool]) -> Iterator[list[Delivery]]:
        """Yield batches of whatever has arrived, up to `max_size`; end when `stopping()`.

        A batch is sent as soon as nothing more is waiting on the socket, so a
        lone task is not held back; under a steady stream that never pauses, a
        batch stops growing after `max_wait_s`.
        """
        assert self._channel is not None and self._connection is not None, "connect() first"
        buffer: list[Delivery] = []

        def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            buffer.append(Delivery(method.delivery_tag, body, method.redelivered, properties))

        try:
            self._channel.basic_consume(self.topology.queue, on_message)
            while not stopping():
                self._connection.process_data_events(time_limit=IDLE_POLL_S)  # returns once a message is in
                if not buffer:
                    continue
                started = time.monotonic()
                while len(buffer) < max_size and time.monotonic() - started < max_wait_s:
                    seen = len(buffer)
                    self._connection.process_data_events(time_limit=0)
                    if len(buffer) == seen:
                        break
                batch, buffer[:] = buffer[:max_size], buffer[max_size:]
                yield batch
        except TRANSPORT_ERRORS as exc:
            raise IngressUnavailable(f"lost the RabbitMQ connection: {exc!r}") from exc

    def ack_through(self, delivery_tag: int) -> None:
        """Acknowledge every message up to and including `delivery_tag`."""
        assert self._channel is not None
        try:
            self._channel.basic_ack(delivery_tag, multiple=True)
        except TRANSPORT_ERRORS as exc:
            raise IngressUnavailable(f"could not ack: {exc!r}") from exc

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        """Publish a copy of `delivery` to the dead-letter queue with `reason` in a header (confirmed)."""
        assert self._channel is not None
        headers = dict(getattr(delivery.properties, "headers", None) or {})
        headers[REASON_HEADER] = reason[:1000]
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            headers=headers,
            message_id=getattr(delivery.properties, "message_id", None),
            content_type=getattr(delivery.properties, "content_type", None),
        )
        try:
            self._channel.basic_publish(self.topology.dead_letter_exchange, "", delivery.body, properties)
        except TRANSPORT_ERRORS as exc:
            raise IngressUnavailable(f"could not dead-letter a message: {exc!r}") from exc

    def depth(self) -> int:
        """Return how many messages wait in the ingress queue (not counting unacked ones)."""
        assert self._channel is not None
        try:
            return int(self._channel.queue_declare(self.topology.queue, passive=True).method.message_count)
        except TRANSPORT_ERRORS as exc:
            raise IngressUnavailable(f"could not read the queue depth: {exc!r}") from exc

    def sleep(self, seconds: float) -> None:
        """Wait while keeping the connection alive (heartbeats keep flowing)."""
        if self._connection is None:
            time.sleep(seconds)
            return
        try:
            self._connection.sleep(seconds)
        except TRANSPORT_ERRORS as exc:
            raise IngressUnavailable(f"lost the RabbitMQ connection while waiting: {exc!r}") from exc

    def close(self) -> None:
        """Close the connection; unacked messages go back to the queue."""
        connection, self._connection, self._channel = self._connection, None, None
        _close_quietly(connection)


def delete_topology(url: str, topology: Topology) -> None:
    """Delete the ingress exchanges and queues, messages included (benchmarks and tests clean up with it)."""
    connection = pika.BlockingConnection(_parameters(url))
    try:
        channel = connection.channel()
        for queue in (topology.queue, topology.dead_letter_queue):
            channel.queue_delete(queue)
        for exchange in (topology.exchange, topology.dead_letter_exchange):
            channel.exchange_delete(exchange)
    finally:
        _close_quietly(connection)
