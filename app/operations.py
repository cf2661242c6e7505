"""The operators' views: queues (depth, pause, resume, empty), task retry and the ingress's dead letters.

Each validates its input, makes one call into the domain (app/queues.py, app/retry.py,
the ingress) and returns JSON; who may call them is app/auth.py's SCOPE_NEEDED.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from app import queues, retry
from app.schemas import TaskPath

queues_tag = Tag(name="queues", description="Each queue's depth, workers and throughput; pause, resume, empty")
recovery_tag = Tag(name="recovery", description="Retry ended tasks; the RabbitMQ ingress's dead letters")
operations = APIBlueprint("operations", __name__, url_prefix="/api")

DEAD_LETTERS_MAX = 1000
"""Most dead letters one GET returns."""


class QueuePath(BaseModel):
    """The queue's name in the URL: high_priority, normal_priority or low_priority."""

    name: str = Field(max_length=200)


class DeadLetterQuery(BaseModel):
    """How many dead letters to return (the count is always of all of them)."""

    limit: int = Field(10, ge=0, le=DEAD_LETTERS_MAX)


def _state() -> Any:
    return current_app.extensions["taskrelay"]


@operations.get("/queues", tags=[queues_tag])
def list_queues() -> Any:
    """Return each task queue's depth by state, workers, oldest queued task's age, last minute's finished count
    and whether it is paused."""
    state = _state()
    return jsonify(queues.overview(state.connection, state.settings))


@operations.post("/queues/<name>/pause", tags=[queues_tag])
def pause_queue(path: QueuePath) -> Any:
    """Stop workers taking from this queue; what they run finishes."""
    return jsonify(queues.set_paused(_state().connection, path.name, pause=True))


@operations.post("/queues/<name>/resume", tags=[queues_tag])
def resume_queue(path: QueuePath) -> Any:
    """Let workers take from this queue again."""
    return jsonify(queues.set_paused(_state().connection, path.name, pause=False))


@operations.post("/queues/<name>/empty", tags=[queues_tag])
def empty_queue(path: QueuePath) -> Any:
    """Drop this queue's queued tasks; answer how many."""
    state = _state()
    return jsonify(queues.empty(state.connection, state.settings, path.name))


@operations.post("/tasks/<task_id>/retry", tags=[recovery_tag])
def retry_task(path: TaskPath) -> Any:
    """Requeue a FAILURE or REVOKED task as a new attempt with the same id (409 in any other state)."""
    return jsonify(retry.retry(_state().connection, path.task_id)), 202


@operations.get("/ingress/dead-letters", tags=[recovery_tag])
def dead_letters(query: DeadLetterQuery) -> Any:
    """Return how many ingress messages were dead-lettered and the first `limit`, with their reasons."""
    return jsonify(_state().ingress.dead_letters(query.limit))


@operations.post("/ingress/dead-letters/replay", tags=[recovery_tag])
def replay_dead_letters() -> Any:
    """Re-publish every dead letter to the ingress queue; answer how many."""
    return jsonify({"replayed": _state().ingress.replay_dead_letters()})
