"""GET /healthz and GET /readyz: liveness and readiness probes, both answered without a key.

`/healthz` does no I/O at all: 200 for as long as the process serves requests
(restart it when this fails). `/readyz` asks Redis, and RabbitMQ when
RABBITMQ_URL is set, whether they answer: 200, or 503 naming the one that is
down with Retry-After (take the process out of the load balancer meanwhile).
"""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify
from pydantic import ConfigDict, Field

from app import errors
from app.openapi import APIBlueprint, Tag
from app.schemas import Described, Unavailable, documented
from core.connection import redis_errors
from core.errors import BackendUnavailable, IngressUnavailable, StorageError

RETRY_AFTER_S = 5
"""What a 503 from /readyz asks the prober to wait before asking again, in seconds."""

probes_tag = Tag(name="probes", description="Liveness and readiness, for load balancers and orchestrators")
blueprint = APIBlueprint("health", __name__)


class NotReady(errors.ServiceUnavailable):
    """A backing service of this API (Redis or RabbitMQ) is not answering: the process cannot serve yet."""

    code = "not_ready"
    retry_after_s = RETRY_AFTER_S

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"not ready: {reason}; try again in {RETRY_AFTER_S} s")
        self.service = service

    def extra(self) -> dict[str, Any]:
        return {"down": self.service}


class Alive(Described):
    """GET /healthz."""

    status: str


class Ready(Described):
    """GET /readyz (200)."""

    status: str
    redis: str
    rabbitmq: str = Field(description="ok, or 'not configured' without RABBITMQ_URL")


class NotReadyBody(Unavailable):
    """503 from GET /readyz: `down` names the service that is not answering (redis or rabbitmq)."""

    down: str
    model_config = ConfigDict(  # type: ignore[typeddict-unknown-key]  # flask-openapi3 reads openapi_extra
        openapi_extra={
            "description": "Not ready: Redis or RabbitMQ (named in `down`) is not answering",
            "headers": {
                "Retry-After": {"required": True, "description": "Seconds to wait", "schema": {"type": "integer"}}
            },
        }
    )


@blueprint.get("/healthz", tags=[probes_tag], responses=documented({200: Alive}, keyed=False))
def healthz() -> Any:
    """Liveness: 200 while the process serves; touches neither Redis nor RabbitMQ."""
    return jsonify({"status": "ok"})


@blueprint.get(
    "/readyz", tags=[probes_tag], responses=documented({200: Ready}, 503, keyed=False, models={503: NotReadyBody})
)
def readyz() -> Any:
    """Readiness: 200 when Redis (and RabbitMQ, when configured) answer; else 503 naming the one that is down."""
    state = current_app.extensions["taskrelay"]
    try:
        with redis_errors():
            state.connection.ping()
    except (BackendUnavailable, StorageError) as exc:
        return errors.render(NotReady("redis", str(exc)))
    answer = {"status": "ready", "redis": "ok", "rabbitmq": "not configured"}
    if state.settings.rabbitmq_url:
        try:
            state.ingress.message_counts()
        except IngressUnavailable as exc:
            return errors.render(NotReady("rabbitmq", str(exc)))
        answer["rabbitmq"] = "ok"
    return jsonify(answer)
