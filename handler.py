"""AWS Lambda entry point: serve API Gateway REST API (payload v1) proxy events with the Flask app.

The app, its Redis pool and its RabbitMQ connection are created on the first
invocation and reused by every later one in the same container (aws-wsgi
translates each event into a WSGI request). HTTP API (payload v2) events are
answered with a clear 400: aws-wsgi 0.2.7 cannot translate them.
"""

from __future__ import annotations

import gc
import json
from typing import Any

# The imports below create ~100,000 objects that live as long as the process (modules, classes, functions,
# models). With the cyclic garbage collector on, allocating them triggers collections that scan them again
# and again: ~40 ms of a cold start here (bench.coldstart). So collection is off while they are imported;
# then gc.freeze() moves them all to the permanent generation, which no later collection scans, and
# collection is back on for the invocations. The import-time cycles that became garbage meanwhile
# (~800 objects) are never collected.
_collecting = gc.isenabled()
gc.disable()
try:
    from core.lazy_imports import defer_redis_asyncio

    defer_redis_asyncio()  # before anything imports redis: its unused asyncio client is loaded on first use

    import awsgi

    from app import create_app
finally:
    gc.freeze()
    if _collecting:
        gc.enable()

BINARY_CONTENT_TYPES = {"application/octet-stream", "image/png", "image/svg+xml", "font/woff2"}

_app: Any = None


def get_app() -> Any:
    """Return the process-wide app, building it on first use."""
    global _app
    if _app is None:
        _app = create_app()
    return _app


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answer one API Gateway proxy event."""
    if "httpMethod" not in event or "path" not in event:
        message = "this function serves API Gateway REST API proxy events (payload format 1.0)"
        if event.get("version") == "2.0":
            message += "; HTTP API (2.0) events are not supported: use a REST API or payload format 1.0"
        body = {"status": "error", "error": "unsupported_event", "message": message, "fields": []}
        return {"statusCode": 400, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}
    return awsgi.response(get_app(), event, context, base64_content_types=BINARY_CONTENT_TYPES)
