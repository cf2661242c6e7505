"""Read and replay the dead-letter queue (`<INGRESS_QUEUE>.dead`), where the bridge puts poison messages.

Each call opens its own short connection (an operator's request, not a hot path).
`peek` takes messages without acking and gives them back (`basic_nack`, requeue),
so they stay where they were. `replay` re-publishes each message that was there
when it started to the ingress exchange, with its AMQP priority and without its
reason header, and acks the dead copy only after RabbitMQ confirmed the new one:
a failure part-way leaves the rest dead, and a message caught in between is at
worst in both queues (the bridge de-duplicates by task id). A message that is
still poison is dead-lettered again by the bridge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from bridge.amqp import TRANSPORT_ERRORS, close_quietly, parameters, redact
from bridge.amqp.consumer import REASON_HEADER
from bridge.amqp.topology import AMQP_PRIORITY, ROUTING_KEY, Topology
from core.errors import IngressUnavailable

BODY_CHARS = 10_000
"""Most characters of a dead message's body that `peek` returns."""
NOT_FOUND = 404


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message: its task id (message id, or the body's), why it is dead, and its body."""

    task_id: str | None
    reason: str | None
    body: str


def _describe(properties: Any, body: bytes) -> DeadLetter:
    headers = getattr(properties, "headers", None) or {}
    reason = headers.get(REASON_HEADER)
    task_id = getattr(properties, "message_id", None) or _field(body, "task_id")
    text = body.decode("utf-8", errors="replace")[:BODY_CHARS]
    return DeadLetter(task_id, reason.decode() if isinstance(reason, bytes) else reason, text)


def _field(body: bytes, name: str) -> Any:
    """Return the top-level field `name` of a JSON object body, or None (a poison body may be anything)."""
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    return decoded.get(name) if isinstance(decoded, dict) else None


def _waiting(channel: BlockingChannel, queue: str) -> int | None:
    """Return how many messages wait in `queue`, or None when it does not exist (no bridge ever declared it)."""
    try:
        return int(channel.queue_declare(queue, passive=True).method.message_count)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == NOT_FOUND:
            return None
        raise


def peek(url: str, topology: Topology, limit: int) -> tuple[int, list[DeadLetter]]:
    """Return how many messages are dead and the first `limit` of them, leaving them in place."""
    connection = None
    try:
        connection = pika.BlockingConnection(parameters(url))
        channel = connection.channel()
        count = _waiting(channel, topology.dead_letter_queue)
        if count is None:
            return 0, []
        letters: list[DeadLetter] = []
        last_tag = None
        while len(letters) < min(limit, count):
            method, properties, body = channel.basic_get(topology.dead_letter_queue, auto_ack=False)
            if method is None:
                break
            letters.append(_describe(properties, body))
            last_tag = method.delivery_tag
        if last_tag is not None:
            channel.basic_nack(last_tag, multiple=True, requeue=True)
        return count, letters
    except TRANSPORT_ERRORS as exc:
        raise IngressUnavailable(f"cannot read the dead letters at {redact(url)}: {exc!r}") from exc
    finally:
        close_quietly(connection)


def replay(url: str, topology: Topology) -> int:
    """Re-publish every message dead when it starts to the ingress queue; return how many were replayed."""
    connection = None
    replayed = 0
    try:
        connection = pika.BlockingConnection(parameters(url))
        channel = connection.channel()
        count = _waiting(channel, topology.dead_letter_queue)
        if not count:  # None: no such queue (its channel is closed now)
            return 0
        channel.confirm_delivery()
        for _ in range(count):
            method, properties, body = channel.basic_get(topology.dead_letter_queue, auto_ack=False)
            if method is None:
                break
            headers = {k: v for k, v in (properties.headers or {}).items() if k != REASON_HEADER}
            named = _field(body, "priority")
            priority = AMQP_PRIORITY.get(named) if isinstance(named, str) else None
            priority = priority or properties.priority or AMQP_PRIORITY["normal"]
            again = pika.BasicProperties(
                delivery_mode=pika.DeliveryMode.Persistent,
                priority=priority,
                message_id=properties.message_id,
                content_type=properties.content_type,
                headers=headers or None,
            )
            channel.basic_publish(topology.exchange, ROUTING_KEY, body, again, mandatory=True)  # waits for confirm
            channel.basic_ack(method.delivery_tag)
            replayed += 1
        return replayed
    except TRANSPORT_ERRORS as exc:
        message = f"replayed {replayed} dead letters, then RabbitMQ at {redact(url)} failed: {exc!r}"
        raise IngressUnavailable(message) from exc
    finally:
        close_quietly(connection)
