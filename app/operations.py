"""The operators' views: queues (depth, pause, resume, empty), task retry, the ingress's dead letters, API keys.

Each validates its input, makes one call into the domain (app/queues.py, app/retry.py,
the ingress, app/keys.py) and returns JSON; who may call them is app/auth.py's SCOPE_NEEDED.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, jsonify
from pydantic import BaseModel

from app import keys, queues, retry
from app.auth import ANONYMOUS, forget_revoked
from app.openapi import APIBlueprint, Tag
from app.schemas import (
    API_KEY,
    CreateKey,
    DeadLetterQuery,
    ErrorBody,
    KeyPath,
    QueuePath,
    TaskNotRetryableError,
    TaskPath,
    documented,
)

queues_tag = Tag(name="queues", description="Each queue's depth, workers and throughput; pause, resume, empty")
keys_tag = Tag(name="keys", description="API keys: create (shown once), list, revoke (admin)")
recovery_tag = Tag(name="recovery", description="Retry ended tasks; the RabbitMQ ingress's dead letters")
operations = APIBlueprint("operations", __name__, url_prefix="/api")
BODY = (413, 415)
"""What a POST may also answer: a body over MAX_BODY_BYTES, or one that is not JSON."""
PLAIN_CONFLICT: dict[int, type[BaseModel]] = {409: ErrorBody}
"""A 409 that carries no task state: the dead-letter routes' (no RABBITMQ_URL) and the keys' (name taken...)."""
PAUSE_RESPONSES = documented({200: "QueuePaused"}, *BODY, 404, 503)


def _state() -> Any:
    return current_app.extensions["taskrelay"]


@operations.get("/queues", tags=[queues_tag], responses=documented({200: "QueueList"}, 503), security=API_KEY)
def list_queues() -> Any:
    """Return each task queue's depth by state, workers, oldest queued task's age, last minute's finished count
    and whether it is paused."""
    state = _state()
    return jsonify(queues.overview(state.connection, state.settings))


@operations.post("/queues/<name>/pause", tags=[queues_tag], responses=PAUSE_RESPONSES, security=API_KEY)
def pause_queue(path: QueuePath) -> Any:
    """Stop workers taking from this queue; what they run finishes."""
    return jsonify(queues.set_paused(_state().connection, path.name, pause=True))


@operations.post("/queues/<name>/resume", tags=[queues_tag], responses=PAUSE_RESPONSES, security=API_KEY)
def resume_queue(path: QueuePath) -> Any:
    """Let workers take from this queue again."""
    return jsonify(queues.set_paused(_state().connection, path.name, pause=False))


@operations.post(
    "/queues/<name>/empty",
    tags=[queues_tag],
    responses=documented({200: "QueueEmptied"}, *BODY, 404, 503),
    security=API_KEY,
)
def empty_queue(path: QueuePath) -> Any:
    """Drop this queue's queued tasks; answer how many."""
    state = _state()
    return jsonify(queues.empty(state.connection, state.settings, path.name))


@operations.post(
    "/tasks/<task_id>/retry",
    tags=[recovery_tag],
    responses=documented({202: "TaskRetried"}, *BODY, 404, 409, 503, models={409: TaskNotRetryableError}),
    security=API_KEY,
)
def retry_task(path: TaskPath) -> Any:
    """Requeue a FAILURE or REVOKED task as a new attempt with the same id (409 in any other state)."""
    return jsonify(retry.retry(_state().connection, path.task_id)), 202


@operations.get(
    "/ingress/dead-letters",
    tags=[recovery_tag],
    responses=documented({200: "DeadLetterList"}, 409, 503, models=PLAIN_CONFLICT),
    security=API_KEY,
)
def dead_letters(query: DeadLetterQuery) -> Any:
    """Return how many ingress messages were dead-lettered and the first `limit`, with their reasons."""
    return jsonify(_state().ingress.dead_letters(query.limit))


@operations.post(
    "/ingress/dead-letters/replay",
    tags=[recovery_tag],
    responses=documented({200: "DeadLettersReplayed"}, *BODY, 409, 503, models=PLAIN_CONFLICT),
    security=API_KEY,
)
def replay_dead_letters() -> Any:
    """Re-publish every dead letter to the ingress queue; answer how many."""
    return jsonify({"replayed": _state().ingress.replay_dead_letters()})


def _actor() -> str:
    return g.get("actor") or ANONYMOUS


@operations.post(
    "/keys",
    tags=[keys_tag],
    responses=documented({201: "KeyCreated"}, *BODY, 409, 503, models=PLAIN_CONFLICT),
    security=API_KEY,
)
def create_key(body: CreateKey) -> Any:
    """Create an API key with these scopes; the answer is the only time the key is shown."""
    key, record = keys.created_key(_state().connection, body.name, list(body.scopes), _actor())
    return jsonify({**keys.describe(record), "key": key}), 201


@operations.get("/keys", tags=[keys_tag], responses=documented({200: "KeyList"}, 503), security=API_KEY)
def list_keys() -> Any:
    """List the API keys, oldest first: id, name, scopes, created and last used (never a key)."""
    records = [keys.describe(record) for record in keys.list_records(_state().connection)]
    return jsonify({"keys": records, "total": len(records)})


@operations.delete(
    "/keys/<key_id>",
    tags=[keys_tag],
    responses=documented({200: "KeyRevoked"}, 404, 409, 503, models=PLAIN_CONFLICT),
    security=API_KEY,
)
def revoke_key(path: KeyPath) -> Any:
    """Revoke a key by its id: refused at once by this API process, by the others within 5 s. The bootstrap key
    answers 409."""
    record = keys.revoke_key(_state().connection, path.key_id, _actor(), by_name=False)[0]
    forget_revoked(current_app, record.id)
    return jsonify({"status": "revoked", "id": record.id, "name": record.name})
