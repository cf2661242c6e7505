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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from bridge.message import IngressUnavailable, Outgoing

log = logging.getLogger("taskrelay.amqp")

AMQP_PRIORITY = {"high": 3, "normal": 2, "low": 1}
MAX_PRIORITY = 3
ROUTING_KEY = "task"
REASON_HEADER = "x-taskrelay-reason"
CONNECT_TIMEOUT_S = 5.0
"""Give up one connection attempt to RabbitMQ after this many seconds."""
QUEUE_VERSION = 2
"""Classic queue storage version 2 (RabbitMQ 3.10+): ~1.7x the confirmed publish rate of version 1 here."""
HEARTBEAT_S = 30
"""AMQP heartbeat the consumer asks for, in seconds."""
IDLE_POLL_S = 0.2
"""How often an idle bridge looks up to check whether it was asked to stop, in seconds."""
CONFIRM_TIMEOUT_S = 10.0
"""Longest a publisher waits for RabbitMQ to answer (connect, declare, confirm), in seconds."""
PUBLISH_TRIES = 2
"""A publish that fails on a broken connection is retried once on a fresh one."""

T = TypeVar("T")
TRANSPORT_ERRORS = (pika.exceptions.AMQPError, OSError)


@dataclass(frozen=True)
class Topology:
    """The names of the ingress exchange, queue and their dead-letter pair."""

    queue: str
    queue_version: int | None = QUEUE_VERSION
    """None for an ingress queue created before Taskrelay declared x-queue-version (see `legacy`)."""

    def legacy(self) -> Topology:
        """This topology as an earlier Taskrelay declared it: RabbitMQ refuses to redeclare a queue with new x-args."""
        return replace(self, queue_version=None)

    def declare_with(self, declare: Callable[[Topology], T], refused: type[Exception]) -> tuple[Topology, T]:
        """Return (the topology used, `declare(topology)`), falling back to `legacy()` for an older queue.

        RabbitMQ answers PRECONDITION_FAILED about x-queue-version (raised by `declare` as `refused`) when
        the queue exists without it; that queue is then used as it is.
        """
        try:
            return self, declare(self)
        except refused as exc:
            if self.queue_version is None or "x-queue-version" not in str(exc):
                raise
            log.warning("ingress queue %r predates x-queue-version; using it as it is", self.queue)
            legacy = self.legacy()
            return legacy, declare(legacy)

    @property
    def exchange(self) -> str:
        return self.queue

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.queue}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.queue}.dead"

    def declarations(self) -> list[tuple[str, dict[str, Any]]]:
        """Return the channel calls (method name, keyword arguments) that declare the topology, in order."""
        arguments: dict[str, Any] = {"x-max-priority": MAX_PRIORITY}
        arguments["x-dead-letter-exchange"] = self.dead_letter_exchange
        if self.queue_version is not None:
            arguments["x-queue-version"] = self.queue_version
        dlx, dlq = self.dead_letter_exchange, self.dead_letter_queue
        return [
            ("exchange_declare", {"exchange": dlx, "exchange_type": "fanout", "durable": True}),
            ("queue_declare", {"queue": dlq, "durable": True}),
            ("queue_bind", {"queue": dlq, "exchange": dlx}),
            ("exchange_declare", {"exchange": self.exchange, "exchange_type": "direct", "durable": True}),
            ("queue_declare", {"queue": self.queue, "durable": True, "arguments": arguments}),
            ("queue_bind", {"queue": self.queue, "exchange": self.exchange, "routing_key": ROUTING_KEY}),
        ]

    def declare(self, channel: BlockingChannel) -> None:
        """Declare exchanges, queues and bindings (idempotent)."""
        for method, kwargs in self.declarations():
            getattr(channel, method)(**kwargs)


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


class _Link:
    """One SelectConnection and confirm-mode channel, driven by whichever thread holds the Publisher's lock.

    pika's SelectConnection is its asynchronous API; here the caller turns its
    I/O loop (`poll`, `process_timeouts`) until what it waits for has happened,
    so a whole batch is written at once and its confirms are awaited together.
    """

    def __init__(self, url: str) -> None:
        self.failure: str | None = None
        self.confirmed: dict[int, str | None] = {}  # delivery tag -> None (acked) or why it was refused
        self.returned: set[str] = set()  # message ids RabbitMQ could not route
        self.next_tag = 1
        self.closing = False  # close() asked for it: the close callbacks are no failure
        self._opened: list[Any] = []
        self.connection = pika.SelectConnection(
            _parameters(url),
            on_open_callback=self._opened.append,
            on_open_error_callback=lambda _c, exc: self._fail(f"cannot connect ({exc.__class__.__name__})"),
            on_close_callback=lambda _c, exc: self._fail(f"connection closed ({exc.__class__.__name__})"),
        )
        self.ioloop = self.connection.ioloop
        self.ioloop.activate_poller()  # what IOLoop.start() would do; this loop is turned by run_until instead
        self.channel: Any = None

    def open(self, topology: Topology) -> None:
        """Finish connecting, open a channel, declare `topology` and turn on confirms; raise _LinkBroken."""
        self.run_until(lambda: bool(self._opened), "connect")
        self.connection.channel(on_open_callback=self._opened.append)
        self.run_until(lambda: len(self._opened) == 2, "open a channel")
        self.channel = self._opened[1]
        self.channel.add_on_close_callback(lambda _ch, exc: self._fail(f"channel closed: {exc}"))
        for method, kwargs in topology.declarations():
            self.call(method, **kwargs)
        self.call("confirm_delivery", ack_nack_callback=self._on_confirm)
        self.channel.add_on_return_callback(self._on_return)

    def _fail(self, reason: str) -> None:
        if self.failure is None and not self.closing:
            self.failure = reason

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        outcome = None if isinstance(method, pika.spec.Basic.Ack) else "RabbitMQ refused the message (nack)"
        tags = range(min(self.confirmed, default=method.delivery_tag), method.delivery_tag + 1)
        for tag in tags if method.multiple else (method.delivery_tag,):
            if tag in self.confirmed and self.confirmed[tag] == "":
                self.confirmed[tag] = outcome

    def _on_return(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        self.returned.add(properties.message_id)

    @property
    def usable(self) -> bool:
        return self.failure is None and self.channel is not None and self.channel.is_open

    def run_until(self, done: Callable[[], bool], what: str, timeout_s: float = CONFIRM_TIMEOUT_S) -> None:
        """Turn the I/O loop until `done()`; raise _LinkBroken on failure or after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        wake = self.ioloop.call_later(timeout_s, lambda: None)  # bounds the poll below
        try:
            while not done():
                if self.failure is not None:
                    raise _LinkBroken(f"{what}: {self.failure}")
                if time.monotonic() >= deadline:
                    raise _LinkBroken(f"{what}: no answer within {timeout_s:g} s")
                self.ioloop.poll()
                self.ioloop.process_timeouts()
        finally:
            self.ioloop.remove_timeout(wake)

    def call(self, method: str, **kwargs: Any) -> Any:
        """Call the channel's asynchronous `method` (one that takes a `callback`), wait and return its answer."""
        answers: list[Any] = []
        getattr(self.channel, method)(**kwargs, callback=answers.append)
        self.run_until(lambda: bool(answers), method)
        return answers[0]

    def publish(self, messages: Sequence[Outgoing], exchange: str) -> list[str | None]:
        """Publish `messages` at once and wait for all their confirms; return None or a refusal reason for each."""
        self.confirmed.clear()
        self.returned.clear()
        tags = []
        for message in messages:
            properties = pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                priority=AMQP_PRIORITY[message.priority],
                message_id=message.message_id,
                content_type="application/json",
            )
            self.channel.basic_publish(exchange, ROUTING_KEY, message.body, properties, mandatory=True)
            self.confirmed[self.next_tag] = ""  # "" = not confirmed yet
            tags.append(self.next_tag)
            self.next_tag += 1
        self._coalesce_output()
        self.run_until(lambda: all(self.confirmed[tag] != "" for tag in tags), "publish")
        outcomes = [self.confirmed[tag] for tag in tags]
        return [
            "RabbitMQ could not route the message" if message.message_id in self.returned else outcome
            for message, outcome in zip(messages, outcomes, strict=True)
        ]

    def _coalesce_output(self) -> None:
        """Join the frames waiting in pika's send buffer, so the batch goes out in one send().

        pika sends each buffered frame with its own send() once the socket is
        writable: three per message (method, header, body). One joined chunk is
        one system call for the API and one TCP read for RabbitMQ. The bytes and
        their order are unchanged. This reaches into pika's transport (pinned
        pika 1.4.4, checked by a test); if that changes, frames go out as before.
        """
        buffers = getattr(getattr(self.connection, "_transport", None), "_tx_buffers", None)
        if buffers is not None and len(buffers) > 1:
            joined = b"".join(buffers)
            buffers.clear()
            buffers.append(joined)

    def close(self) -> None:
        """Close the connection (briefly waiting for RabbitMQ's close-ok) and release the loop's descriptors."""
        with contextlib.suppress(*TRANSPORT_ERRORS, _LinkBroken):
            if self.connection.is_open:
                self.closing, self.failure = True, None  # what failed before no longer stops the close
                self.connection.close()
                self.run_until(lambda: self.connection.is_closed, "close", timeout_s=1.0)
        self.ioloop.deactivate_poller()
        self.ioloop.close()


class _LinkBroken(Exception):
    """The connection or channel failed, or RabbitMQ did not answer in time."""


class Publisher:
    """Publish task envelopes with publisher confirms over one connection per process.

    Thread-safe: callers take turns under a lock. `publish_many` writes a whole
    batch before waiting, so its confirms come back together (RabbitMQ acks
    them with `multiple`): per message, that costs the API and RabbitMQ a
    fraction of one publish-and-wait each (see the README's ingress benchmark).
    The connection is opened on first use and reopened when found broken, so it
    survives RabbitMQ restarts and frozen Lambda containers; messages caught in
    a broken connection are published once more on the new one (the bridge
    de-duplicates by task id).
    """

    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url
        self.topology = topology
        self._lock = threading.Lock()
        self._link: _Link | None = None

    def _open(self) -> _Link:
        if self._link is not None and self._link.usable:
            return self._link
        self._close()
        self.topology, link = self.topology.declare_with(self._connect, _LinkBroken)
        self._link = link
        return link

    def _connect(self, topology: Topology) -> _Link:
        link = _Link(self.url)
        try:
            link.open(topology)
        except BaseException:
            link.close()
            raise
        return link

    def _close(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            link.close()

    def _call(self, action: Callable[[_Link], T], what: str) -> T:
        for attempt in range(1, PUBLISH_TRIES + 1):
            try:
                return action(self._open())
            except (_LinkBroken, *TRANSPORT_ERRORS) as exc:
                self._close()
                if attempt == PUBLISH_TRIES:
                    raise IngressUnavailable(f"RabbitMQ is not answering at {_redact(self.url)} ({exc})") from exc
                log.warning("RabbitMQ connection broken during %s (%s); reconnecting", what, exc)
        raise AssertionError("unreachable")

    def publish_many(self, messages: Sequence[Outgoing]) -> list[str | None]:
        """Publish persistent messages and wait for RabbitMQ's confirms.

        Returns, per message, None once confirmed or the reason RabbitMQ
        refused it; raises IngressUnavailable when RabbitMQ cannot be reached.
        """
        with self._lock:
            return self._call(lambda link: link.publish(messages, self.topology.exchange), "publish")

    def publish(self, body: bytes, priority: str, message_id: str) -> None:
        """Publish one persistent message and return once RabbitMQ confirmed it; raise IngressUnavailable."""
        (refused,) = self.publish_many([Outgoing(body, priority, message_id)])
        if refused is not None:
            raise IngressUnavailable(refused)

    def purge(self) -> int:
        """Drop every message waiting in the ingress queue; return how many."""

        def purge(link: _Link) -> int:
            frame = link.call("queue_purge", queue=self.topology.queue)
            return int(frame.method.message_count)

        with self._lock:
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
            connection = self._connection = pika.BlockingConnection(_parameters(self.url, HEARTBEAT_S))

            def declared(topology: Topology) -> BlockingChannel:
                channel = connection.channel()  # a refused declare closes its channel
                topology.declare(channel)
                return channel

            self.topology, channel = self.topology.declare_with(declared, pika.exceptions.ChannelClosedByBroker)
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
