"""API errors: each carries its HTTP status and a message a user can act on, rendered as JSON.

Every error response has the shape
`{"status": "error", "error": <code>, "message": <sentence>, "fields": [...]}`;
`fields` names each offending field with what is allowed. No traceback ever
reaches a client: unexpected exceptions are logged and answered with a plain 500.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, Response, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from jobs.errors import BackendUnavailable, TaskrelayError, UnknownTaskType

log = logging.getLogger("taskrelay.api")


class ApiError(TaskrelayError):
    """An error the API answers with a 4xx or 5xx JSON body."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, fields: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or []


class InvalidRequest(ApiError):
    """The request body or query does not fit the schema."""

    code = "validation_error"


class TaskNotFound(ApiError):
    """No task with that id was ever submitted, or its record has expired."""

    status = 404
    code = "not_found"


class ServiceUnavailable(ApiError):
    """A backing service (Redis) is not answering; the request was not accepted."""

    status = 503
    code = "service_unavailable"


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
    response = jsonify({"status": "error", "error": error.code, "message": error.message, "fields": error.fields})
    response.status_code = error.status
    return response


def init_app(app: Flask) -> None:
    """Register JSON error handlers on `app`."""

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Any:
        return render(error)

    @app.errorhandler(UnknownTaskType)
    def _unknown_task_type(error: UnknownTaskType) -> Any:
        return render(
            InvalidRequest(str(error), [{"field": "task_type", "message": str(error), "allowed": error.known}])
        )

    @app.errorhandler(BackendUnavailable)
    def _unavailable(error: BackendUnavailable) -> Any:
        log.error("backend unavailable: %s", error)
        return render(ServiceUnavailable(f"{error}; the request was not accepted, try again shortly"))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> Any:
        api_error = ApiError(error.description or error.name)
        api_error.status = error.code or 500
        api_error.code = error.name.lower().replace(" ", "_")
        if error.code == 413:
            api_error.message = f"request body is larger than the limit of {app.config['MAX_CONTENT_LENGTH']} bytes"
            api_error.fields = [{"field": "body", "message": api_error.message}]
        return render(api_error)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Any:
        log.exception("unhandled error")
        api_error = ApiError("internal error; it has been logged")
        api_error.status, api_error.code = 500, "internal_error"
        return render(api_error)
