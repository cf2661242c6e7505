"""How the API hands an accepted task on: straight into RQ, or through RabbitMQ to the bridge."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import redis

from bridge import pending
from bridge.message import TaskEnvelope
from jobs.queues import TaskRequest, enqueue_task, redis_errors
from jobs.settings import Settings

log = logging.getLogger("taskrelay.ingress")


class Ingress(Protocol):
    """Where POST /api/tasks sends a validated task."""

    description: str

    def submit(self, request: TaskRequest) -> None:
        """Accept `request` durably or raise BackendUnavailable (the API answers 503)."""

    def purge(self) -> int:
        """Drop tasks still waiting in the ingress; return how many."""

    def close(self) -> None:
        """Release connections (the app is shutting down)."""


class DirectIngress:
    """Enqueue into RQ from the API process (no RabbitMQ)."""

    description = "direct into RQ"

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings

    def submit(self, request: TaskRequest) -> None:
        with redis_errors():
            enqueue_task(self.connection, self.settings, request)

    def purge(self) -> int:
        return 0

    def close(self) -> None:
        pass


class RabbitIngress:
    """Publish to the durable ingress queue with confirms; the bridge enqueues into RQ.

    The task is recorded in Redis as accepted first, so it is PENDING from the
    moment the API answers. That record is best effort: with Redis down the
    task is still accepted (it waits in RabbitMQ), it just cannot be read yet.
    """

    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        from bridge.amqp import Publisher, Topology  # pika is loaded only where RabbitMQ is used

        self.connection = connection
        self.publisher = Publisher(settings.rabbitmq_url, Topology(settings.ingress_queue))
        self.description = f"RabbitMQ queue {settings.ingress_queue!r}, moved into RQ by the bridge"

    def submit(self, request: TaskRequest) -> None:
        recorded = self._try(lambda: pending.remember(self.connection, request), "record", request)
        try:
            self.publisher.publish(TaskEnvelope.from_request(request).encode(), request.priority, request.task_id)
        except Exception:
            if recorded:
                self._try(lambda: pending.forget(self.connection, [request]), "unrecord", request)
            raise

    def purge(self) -> int:
        return self.publisher.purge()

    def close(self) -> None:
        self.publisher.close()

    def _try(self, action: Callable[[], object], what: str, request: TaskRequest) -> bool:
        try:
            action()
            return True
        except redis.exceptions.RedisError as exc:
            log.warning("could not %s accepted task in Redis: %s", what, exc, extra={"task_id": request.task_id})
            return False


def build(connection: redis.Redis, settings: Settings) -> Ingress:
    """Return the ingress the settings ask for: RabbitMQ when RABBITMQ_URL is set, else direct."""
    if settings.rabbitmq_url:
        return RabbitIngress(connection, settings)
    return DirectIngress(connection, settings)
