"""The Taskrelay HTTP API: `create_app()` builds the Flask app (app.openapi: validation, and flask-openapi3's docs).

It stands on `core/` and, to publish to RabbitMQ, `bridge.message` and `bridge.amqp`;
never on `jobs/` or the bridge process (tests/unit/test_architecture.py).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis
from flask import Response, g, request
from pydantic import ValidationError

from app import auth, dashboard, errors, health, idempotency, ingress, metrics, ratelimit
from app.ingress import Ingress
from app.openapi import Info, OpenAPI
from app.schemas import SECURITY_SCHEMES, ErrorBody
from core import logs, registry
from core.connection import API_SOCKET_TIMEOUT_S, connect
from core.settings import Settings

__version__ = "0.1.0"

log = logging.getLogger("taskrelay.api")


@dataclass
class AppState:
    """What the views need: settings, the shared Redis client (one pool per process) and the ingress."""

    settings: Settings
    connection: redis.Redis
    ingress: Ingress


def _validation_failed(exc: ValidationError) -> Any:
    return errors.render(errors.invalid_request(exc))


def _check_json_body() -> Any:
    """Refuse bodies that are not a JSON object before the views see them."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.path.startswith("/api/"):
        return None
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    if not raw.strip():
        return None
    if not request.is_json:
        return errors.render(
            errors.UnsupportedMediaType(
                f"Content-Type must be application/json, got {request.content_type or 'none'!r}",
                [{"field": "Content-Type", "message": "must be application/json"}],
            )
        )
    body = request.get_json(silent=True)  # parsed once; flask-openapi3 reuses Flask's cached value
    if body is None:
        try:
            json.loads(raw)
        except ValueError as exc:
            return errors.render(
                errors.InvalidRequest(f"body is not valid JSON: {exc}", [{"field": "body", "message": "invalid JSON"}])
            )
    if not isinstance(body, dict):
        return errors.render(
            errors.InvalidRequest("body must be a JSON object", [{"field": "body", "message": "must be an object"}])
        )
    return None


def create_app(settings: Settings | None = None, connection: redis.Redis | None = None) -> OpenAPI:
    """Build the API app; `settings` default to the environment, `connection` to REDIS_URL."""
    settings = settings or Settings.from_env()
    logs.setup(settings.log_level)
    registry.load(settings.task_modules)
    app = OpenAPI(
        __name__,
        info=Info(title="Taskrelay", version=__version__, description="Task API on RQ (Celery-compatible contract)"),
        validation_error_status=400,
        validation_error_callback=_validation_failed,
        security_schemes=SECURITY_SCHEMES,
        validation_error_model=ErrorBody,
        named_models="app.response_models",  # the success answers: only the OpenAPI document needs them
    )
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    connection = connection or connect(settings.redis_url, socket_timeout_s=API_SOCKET_TIMEOUT_S)
    app.extensions["taskrelay"] = AppState(settings, connection, ingress.build(connection, settings))
    errors.init_app(app)

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    auth.init_app(app, connection, settings, dashboard_login=lambda: dashboard.pair_login(settings))
    ratelimit.init_app(app, settings.rate_limit)
    app.before_request(_check_json_body)
    idempotency.init_app(app)  # after auth: keys are scoped per API key (g.api_key)

    @app.after_request
    def _log_request(response: Response) -> Response:
        duration_ms = round((time.perf_counter() - g.get("started", time.perf_counter())) * 1000, 3)
        log.info(
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={"path": request.path, "duration_ms": duration_ms},
        )
        return response

    from app.api import api
    from app.operations import operations

    app.register_api(api)
    app.register_api(operations)
    app.register_api(health.blueprint)
    app.register_api(metrics.blueprint)
    dashboard.init_app(app, settings)
    return app
