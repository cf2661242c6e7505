"""`Idempotency-Key` on POST /api/tasks and POST /api/workflows (Stripe's, and the IETF httpapi draft's).

* first request with a key: runs; a 2xx answer is stored for IDEMPOTENCY_TTL_S (default 24 h);
* the same key and the same body again: the stored answer, with `Idempotent-Replayed: true`; nothing is
  submitted or published again (the RabbitMQ ingress included);
* the same key with a different body: 422; while the first is still running: 409 with `Retry-After` (the
  seconds left of its idempotency.LEASE_S): then a retry takes the key over (its process may have died);
* the ids a request creates are derived from its key's claim (`new_id`), so a retry that took the key over,
  or that follows a 5xx, creates the same task or workflow, which the enqueue keeps once;
* an answer that is not 2xx is not stored: after a 4xx the key may be sent again with a corrected body;
* keys are scoped per caller (the API key's id when auth is on), at most MAX_KEY_LENGTH characters (400).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from uuid import UUID, uuid4, uuid5

from flask import Flask, Response, current_app, g, jsonify, request

from app import errors
from app.auth import caller_scope
from core.connection import redis_errors
from core.storage import idempotency

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
ROUTES = {("POST", "/api/tasks"), ("POST", "/api/workflows")}


def fingerprint(path: str, raw: bytes) -> str:
    """Return what identifies a request's content: its path and its JSON body, whatever the spacing or key order."""
    try:
        canonical = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = raw
    return hashlib.sha256(path.encode() + b"\n" + canonical).hexdigest()


def _before() -> Any:
    key = request.headers.get(HEADER)
    if key is None or (request.method, request.path) not in ROUTES:
        return None
    if not key or len(key) > MAX_KEY_LENGTH:
        message = f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters, got {len(key)}"
        return errors.render(errors.InvalidRequest(message, [{"field": HEADER, "message": message}]))
    state = current_app.extensions["taskrelay"]
    content = fingerprint(request.path, request.get_data(cache=True))
    with redis_errors():
        seen = idempotency.begin(state.connection, caller_scope(), key, content)
    if seen.state == "mismatch":
        message = f"this {HEADER} was already used with a different request body; use a new key for a new request"
        return errors.render(errors.IdempotencyMismatch(message, [{"field": HEADER, "message": message}]))
    if seen.state == "in_flight":
        wait_s = errors.retry_after(seen.lease_left_s)
        message = f"the first request with this {HEADER} is still being processed; retry in {wait_s} s at most"
        conflict = errors.IdempotencyConflict(message, [{"field": HEADER, "message": message}], retry_after_s=wait_s)
        return errors.render(conflict)
    if seen.state == "done":
        response = jsonify(seen.body)
        response.status_code = seen.status
        response.headers[REPLAYED_HEADER] = "true"
        return response
    g.idempotency = (key, content, seen.claim)
    return None


def new_id(purpose: str) -> str:
    """Return the id of something this request creates (`purpose` names it: "task", "step:a"...).

    Random, or with an Idempotency-Key, derived from the key's claim: a retry that took the key over, or
    that follows a 5xx, creates the same ids, so whatever the first attempt published is not made twice.
    """
    claimed = g.get("idempotency")
    if claimed is None:
        return str(uuid4())
    return str(uuid5(UUID(claimed[2].seed), purpose))


def _after(response: Response) -> Response:
    claimed = g.pop("idempotency", None)
    if claimed is None:
        return response
    key, content, claim = claimed
    state = current_app.extensions["taskrelay"]
    try:
        with redis_errors():
            if 200 <= response.status_code < 300:
                body = response.get_json(silent=True)
                ttl = state.settings.idempotency_ttl_s
                idempotency.finish(state.connection, caller_scope(), key, content, response.status_code, body, ttl)
            elif response.status_code >= 500:  # it may have published before failing: keep the ids
                idempotency.release(state.connection, caller_scope(), key, claim)
            else:
                idempotency.abandon(state.connection, caller_scope(), key, claim)
    except Exception:  # the answer stands; a retry takes the key over after LEASE_S
        current_app.logger.warning("could not store the answer for an %s", HEADER)
    return response


def init_app(app: Flask) -> None:
    """Check and replay Idempotency-Key on the submit routes (after the body checks, before the views)."""
    app.before_request(_before)
    app.after_request(_after)
