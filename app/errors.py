"""API errors: each carries its HTTP status and a message a user can act on, rendered as JSON.

Every error response has the shape
`{"status": "error", "error": <code>, "message": <sentence>, "fields": [...]}`;
`fields` names each offending field with what is allowed. No traceback ever
reaches a client: unexpected exceptions are logged and answered with a plain 500.

Each answer is a subclass of ApiError with its own status; domain errors from
core.errors become one of them through one table, DOMAIN_ERRORS.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from core.errors import ApiKeyError, BackendUnavailable, StorageError, TaskrelayError, UnknownTaskType

log = logging.getLogger("taskrelay.api")


class ApiError(TaskrelayError):
    """An error the API answers with a 4xx or 5xx JSON body."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []

    def extra(self) -> dict[str, Any]:
        """Return fields this kind of error adds to the JSON body (none by default)."""
        return {}

    def headers(self) -> dict[str, str]:
        """Return HTTP headers this kind of error adds to the response (none by default)."""
        return {}


def retry_after(wait_s: float) -> int:
    """Return what `Retry-After` says for a wait of `wait_s` seconds: whole seconds, at least 1."""
    return max(1, math.ceil(wait_s))


class RetryLater(ApiError):
    """An answer the client may send again later: `Retry-After` says in how many seconds."""

    retry_after_s = 1
    """The wait, in seconds, unless the error is given its own (see `retry_after`)."""

    def __init__(self, message: str, fields: list[dict[str, Any]] | None = None, retry_after_s: int | None = None):
        super().__init__(message, fields)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class InvalidRequest(ApiError):
    """The request body or query does not fit the schema."""

    code = "validation_error"


class Unauthorized(ApiError):
    """No API key was sent, or the one sent is unknown or revoked."""

    status = 401
    code = "unauthorized"
    challenge = 'Bearer realm="taskrelay"'

    def __init__(self, message: str) -> None:
        super().__init__(message, [{"field": "Authorization", "message": "a valid API key is required"}])

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge}


class DashboardLoginRequired(Unauthorized):
    """The dashboard was opened without an admin key: the browser is asked for one (any user, key as password)."""

    challenge = 'Basic realm="taskrelay dashboard"'

    def __init__(self) -> None:
        super().__init__("log in with any user name and an admin API key as the password")


class Forbidden(ApiError):
    """The API key is valid but its scopes do not cover this request."""

    status = 403
    code = "forbidden"

    def __init__(self, needed: str, held: tuple[str, ...]) -> None:
        message = f"this request needs an API key with the {needed!r} scope; this key has {', '.join(held)}"
        super().__init__(message, [{"field": "Authorization", "message": f"needs scope {needed}"}])
        self.needed = needed

    def extra(self) -> dict[str, Any]:
        return {"scope_needed": self.needed}


class TaskNotFound(ApiError):
    """No task with that id was ever submitted, or its record has expired."""

    status = 404
    code = "not_found"


class TaskFinished(ApiError):
    """The task already ended (SUCCESS, FAILURE or REVOKED): there is nothing left to cancel."""

    status = 409
    code = "task_finished"

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message)
        self.state = state

    def extra(self) -> dict[str, Any]:
        return {"state": self.state}


class TaskNotRetryable(ApiError):
    """The task is not in a state a retry applies to (only FAILURE and REVOKED are), or is a workflow's step."""

    status = 409
    code = "task_not_retryable"

    def __init__(self, message: str, state: str) -> None:
        super().__init__(message)
        self.state = state

    def extra(self) -> dict[str, Any]:
        return {"state": self.state}


class QueueNotFound(ApiError):
    """No task queue has that name; the message lists the known ones."""

    status = 404
    code = "not_found"


class IngressNotConfigured(ApiError):
    """The request is about the RabbitMQ ingress, and RABBITMQ_URL is not set."""

    status = 409
    code = "ingress_not_configured"


class WorkflowNotFound(ApiError):
    """No workflow with that id was ever submitted, or its record has expired."""

    status = 404
    code = "not_found"


class ScheduleNotFound(ApiError):
    """No schedule with that id exists."""

    status = 404
    code = "not_found"


class KeyNotFound(ApiError):
    """No API key has that id."""

    status = 404
    code = "not_found"


class KeyConflict(ApiError):
    """The key cannot be created or revoked as asked: its name is taken, or it is the bootstrap key."""

    status = 409
    code = "conflict"


class RateLimited(RetryLater):
    """The caller's API key sent more requests than RATE_LIMIT allows."""

    status = 429
    code = "rate_limited"


class IdempotencyConflict(RetryLater):
    """The request with this Idempotency-Key is still being processed (`Retry-After`: until its lease ends)."""

    status = 409
    code = "idempotency_conflict"


class IdempotencyMismatch(ApiError):
    """An Idempotency-Key was reused with a different request body."""

    status = 422
    code = "idempotency_key_reused"


class BodyTooLarge(ApiError):
    """The request body is over MAX_BODY_BYTES."""

    status = 413
    code = "request_entity_too_large"


class UnsupportedMediaType(ApiError):
    """A body was sent that is not declared as application/json."""

    status = 415
    code = "unsupported_media_type"


class InternalError(ApiError):
    """Something failed that the client cannot fix; the details are in the log only."""

    status = 500
    code = "internal_error"


class ServiceUnavailable(RetryLater):
    """A backing service (Redis) is not answering; the request was not accepted."""

    status = 503
    code = "service_unavailable"
    retry_after_s = 1
    """What `Retry-After` tells the client, in seconds: outages this API rides out are short (a reconnect)."""


class HttpError(ApiError):
    """Any other HTTP error Flask raises itself (unknown path, wrong method), in the API's JSON shape."""

    def __init__(self, error: HTTPException) -> None:
        super().__init__(error.description or error.name)
        self.status = error.code or 500
        self.code = error.name.lower().replace(" ", "_")


def _unknown_task_type(error: UnknownTaskType) -> ApiError:
    return InvalidRequest(str(error), [{"field": "task_type", "message": str(error), "allowed": error.known}])


def _unavailable(error: BackendUnavailable) -> ApiError:
    log.error("backend unavailable: %s", error)
    return ServiceUnavailable(f"{error}; the request was not accepted, try again shortly")


def _storage(error: StorageError) -> ApiError:
    log.error("storage error: %s", error)
    return InternalError("internal error; it has been logged")


def _api_key(error: ApiKeyError) -> ApiError:
    if error.reason == ApiKeyError.UNKNOWN:
        return KeyNotFound(str(error))
    if error.reason in (ApiKeyError.TAKEN, ApiKeyError.FIXED):
        return KeyConflict(str(error))
    return InvalidRequest(str(error), [{"field": "name", "message": str(error)}])


DOMAIN_ERRORS: dict[type[TaskrelayError], Callable[[Any], ApiError]] = {
    ApiKeyError: _api_key,  # 404 unknown id, 409 name taken or the bootstrap key, 400 otherwise
    UnknownTaskType: _unknown_task_type,  # 400, naming the known task types
    BackendUnavailable: _unavailable,  # 503 (IngressUnavailable too: RabbitMQ)
    StorageError: _storage,  # 500: Redis refused a command; nothing a client can change
}
"""How each domain error is answered: its class -> the ApiError (status, code, fields) the client gets."""


def field_errors(exc: ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    """Turn pydantic errors into [{field, message, allowed?}] entries."""
    fields = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        name = f"{prefix}.{loc}" if prefix and loc else (prefix or loc or "body")
        entry: dict[str, Any] = {"field": name, "message": err["msg"].removeprefix("Value error, ")}
        expected = (err.get("ctx") or {}).get("expected")
        if expected:
            entry["allowed"] = re.findall(r"'([^']*)'", expected) or expected
        if err["type"] == "dict_type":
            entry["message"] = "must be a JSON object"
        if err["type"] == "extra_forbidden":
            entry["message"] = "unknown field"
        fields.append(entry)
    return fields


def invalid_request(exc: ValidationError, prefix: str = "") -> InvalidRequest:
    """Build the 400 error for a pydantic ValidationError, naming every bad field."""
    fields = field_errors(exc, prefix)
    summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return InvalidRequest(summary or "invalid request", fields)


def render(error: ApiError) -> Response:
    """Return the Flask response for `error`."""
    body = {"status": "error", "error": error.code, "message": error.message, "fields": error.fields}
    body.update(error.extra())
    response = jsonify(body)
    response.status_code = error.status
    response.headers.update(error.headers())
    return response


def init_app(app: Flask) -> None:
    """Register JSON error handlers on `app`."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Any:
        return render(error)

    for error_class, to_api_error in DOMAIN_ERRORS.items():
        app.register_error_handler(error_class, lambda error, answer=to_api_error: render(answer(error)))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        if error.code == 413:
            message = f"request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes"
            return render(BodyTooLarge(message, [{"field": "body", "message": message}]))
        return render(HttpError(error))

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        log.exception("unhandled error")
        return render(InternalError("internal error; it has been logged"))
