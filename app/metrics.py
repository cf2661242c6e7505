"""GET /metrics: Taskrelay in Prometheus's text format, rendered from Redis at scrape time (app/prometheus.py).

Nothing is counted in this process: the collector reads the counters every
process adds to in Redis (core/storage/metrics.py) and the gauges (queues,
workers, bridge lag, workflows, RabbitMQ's queues) when Prometheus asks, so
every API process, and every Lambda container, answers the same numbers.
prometheus_client is imported by the first scrape, not by a cold start.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request

from app.openapi import APIBlueprint, Tag
from app.schemas import API_KEY, documented

metrics_tag = Tag(name="operations", description="Health and the registered task types")
blueprint = APIBlueprint("metrics", __name__)


EXPOSITION = {
    "description": "Prometheus's text format 0.0.4 (OpenMetrics 1.0 when the Accept header asks for it)",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}


@blueprint.get("/metrics", tags=[metrics_tag], responses=documented({200: dict(EXPOSITION)}, 503), security=API_KEY)
def scrape() -> Any:
    """Prometheus metrics: counters, runtime histogram, queue lengths, workers, bridge lag, workflows."""
    from app import prometheus  # the first scrape pays for prometheus_client, not every cold start

    state = current_app.extensions["taskrelay"]
    body, content_type = prometheus.render(state.connection, state.ingress, request.headers.get("Accept", ""))
    return Response(body, content_type=content_type)
