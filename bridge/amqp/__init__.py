"""Everything that speaks AMQP: the only place pika is imported (a test enforces it).

    topology   the ingress exchange and queue, and their dead-letter pair
    publisher  confirmed publishes from the API (group-committed batches)
    consumer   the bridge's batching consumer with manual acks

Topology, all durable, named after INGRESS_QUEUE (default `taskrelay.ingress`):

    exchange <q> (direct) --"task"--> queue <q>  (x-max-priority 3, dead-letters to <q>.dlx)
    exchange <q>.dlx (fanout) ------> queue <q>.dead

Messages are persistent and carry an AMQP priority (high 3, normal 2, low 1), so
a high task overtakes every low one still waiting in the queue; what a bridge
already prefetched (one batch) is ahead of it. pika errors never leave this
package: after bounded retries they become IngressUnavailable.
"""

from __future__ import annotations

import contextlib

import pika
import pika.exceptions

CONNECT_TIMEOUT_S = 5.0
"""Give up one connection attempt to RabbitMQ after this many seconds."""
TRANSPORT_ERRORS = (pika.exceptions.AMQPError, OSError)
"""What pika raises when RabbitMQ or the network fails; translated into IngressUnavailable here."""


def parameters(url: str, heartbeat_s: int | None = None) -> pika.URLParameters:
    """Return pika's connection parameters for `url`: one attempt, bounded by CONNECT_TIMEOUT_S."""
    parameters = pika.URLParameters(url)
    parameters.socket_timeout = CONNECT_TIMEOUT_S
    parameters.stack_timeout = CONNECT_TIMEOUT_S
    parameters.blocked_connection_timeout = CONNECT_TIMEOUT_S * 2
    parameters.connection_attempts = 1
    if heartbeat_s is not None:
        parameters.heartbeat = heartbeat_s
    return parameters


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Close `connection` if open, ignoring transport errors (it is being dropped anyway)."""
    if connection is not None and connection.is_open:
        with contextlib.suppress(*TRANSPORT_ERRORS):
            connection.close()


def redact(url: str) -> str:
    """Return `url` without its user name and password, for messages and logs."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"
