"""The operators' views: queues (depth, pause, resume, empty), task retry and the ingress's dead letters.

Each validates its input, makes one call into the domain (app/queues.py, app/retry.py,
the ingress) and returns JSON; who may call them is app/auth.py's SCOPE_NEEDED.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify
from flask_openapi3 import Tag
from pydantic import BaseModel

from app import queues, retry
from app.openapi import APIBlueprint
from app.response_models import (
    DeadLetterList,
    DeadLettersReplayed,
    QueueEmptied,
    QueueList,
    QueuePaused,
    TaskRetried,
)
from app.schemas import API_KEY, DeadLetterQuery, ErrorBody, QueuePath, TaskNotRetryableError, TaskPath, documented

queues_tag = Tag(name="queues", description="Each queue's depth, workers and throughput; pause, resume, empty")
recovery_tag = Tag(name="recovery", description="Retry ended tasks; the RabbitMQ ingress's dead letters")
operations = APIBlueprint("operations", __name__, url_prefix="/api")
BODY = (413, 415)
"""What a POST may also answer: a body over MAX_BODY_BYTES, or one that is not JSON."""
NOT_CONFIGURED: dict[int, type[BaseModel]] = {409: ErrorBody}
"""The dead-letter routes' 409 (no RABBITMQ_URL) carries no task state."""
PAUSE_RESPONSES = documented({200: QueuePaused}, *BODY, 404, 503)


def _state() -> Any:
    return current_app.extensions["taskrelay"]


@operations.get("/queues", tags=[queues_tag], responses=documented({200: QueueList}, 503), security=API_KEY)
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
    responses=documented({200: QueueEmptied}, *BODY, 404, 503),
    security=API_KEY,
)
def empty_queue(path: QueuePath) -> Any:
    """Drop this queue's queued tasks; answer how many."""
    state = _state()
    return jsonify(queues.empty(state.connection, state.settings, path.name))


@operations.post(
    "/tasks/<task_id>/retry",
    tags=[recovery_tag],
    responses=documented({202: TaskRetried}, *BODY, 404, 409, 503, models={409: TaskNotRetryableError}),
    security=API_KEY,
)
def retry_task(path: TaskPath) -> Any:
    """Requeue a FAILURE or REVOKED task as a new attempt with the same id (409 in any other state)."""
    return jsonify(retry.retry(_state().connection, path.task_id)), 202


@operations.get(
    "/ingress/dead-letters",
    tags=[recovery_tag],
    responses=documented({200: DeadLetterList}, 409, 503, models=NOT_CONFIGURED),
    security=API_KEY,
)
def dead_letters(query: DeadLetterQuery) -> Any:
    """Return how many ingress messages were dead-lettered and the first `limit`, with their reasons."""
    return jsonify(_state().ingress.dead_letters(query.limit))


@operations.post(
    "/ingress/dead-letters/replay",
    tags=[recovery_tag],
    responses=documented({200: DeadLettersReplayed}, *BODY, 409, 503, models=NOT_CONFIGURED),
    security=API_KEY,
)
def replay_dead_letters() -> Any:
    """Re-publish every dead letter to the ingress queue; answer how many."""
    return jsonify({"replayed": _state().ingress.replay_dead_letters()})
