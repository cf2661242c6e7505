"""The bridge's side of the ingress: take messages in batches with manual acks, dead-letter poison ones."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from bridge.amqp import TRANSPORT_ERRORS, close_quietly, parameters, redact
from bridge.amqp.topology import Topology
from core.errors import IngressUnavailable

REASON_HEADER = "x-taskrelay-reason"
"""The header a dead-lettered message carries: why it could never become a task."""
HEARTBEAT_S = 30
"""AMQP heartbeat the consumer asks for, in seconds."""
IDLE_POLL_S = 0.2
"""How often an idle bridge looks up to check whether it was asked to stop, in seconds."""


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
            connection = self._connection = pika.BlockingConnection(parameters(self.url, HEARTBEAT_S))

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
            raise IngressUnavailable(f"cannot consume from RabbitMQ at {redact(self.url)}: {exc!r}") from exc

    def batches(self, max_size: int, max_wait_s: float, stopping: Callable[[], bool]) -> Iterator[list[Delivery]]:
        """Yield batches of whatever has arrived, up to `max_size`; end when `stopping()`.

        A batch is sent as soon as nothing more is waiting on the socket, so a
        lone task is not held back; under a steady stream that never pauses, a
        batch stops growing after `max_wait_s`.
        """
        assert self._channel is not None and self._connection is not None, "connect() first"
        buffer: list[Delivery] = []

        canceled: list[Any] = []

        def on_message(_channel: Any, method: Any, properties: Any, body: bytes) -> None:
            buffer.append(Delivery(method.delivery_tag, body, method.redelivered, properties))

        try:
            # RabbitMQ cancels the consumer when its queue is deleted (or a queue's leader node is lost): then
            # nothing more would come, so reconnect, which declares the queue again.
            self._channel.add_on_cancel_callback(canceled.append)
            self._channel.basic_consume(self.topology.queue, on_message)
            while not stopping():
                # Returns once a message is in; at once if some came in meanwhile (while the caller slept).
                self._connection.process_data_events(time_limit=0 if buffer else IDLE_POLL_S)
                if canceled and not buffer:
                    raise IngressUnavailable(f"RabbitMQ canceled the consumer of {self.topology.queue!r}")
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
        close_quietly(connection)
