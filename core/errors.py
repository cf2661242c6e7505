"""The one error tree of Taskrelay; every error it raises on purpose derives from TaskrelayError.

    TaskrelayError
    ├── ConfigError
    ├── UnknownTaskType
    ├── TaskInputError
    ├── BackendUnavailable
    │   ├── BackendFull
    │   └── IngressUnavailable
    ├── StorageError
    ├── PoisonMessage
    ├── LaunchError
    ├── ApiKeyError
    └── app.errors.ApiError (and its subclasses: the HTTP answers)

How each maps onto an HTTP status is decided in one table, `app.errors.DOMAIN_ERRORS`.
"""


class TaskrelayError(Exception):
    """Base class of every error Taskrelay raises on purpose."""


class ConfigError(TaskrelayError):
    """A setting read from the environment is missing or malformed."""


class UnknownTaskType(TaskrelayError):
    """No task type is registered under the requested name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(f"unknown task_type {name!r}; known: {', '.join(known)}")


class TaskInputError(TaskrelayError):
    """A task's parameters cannot be processed; retrying would fail the same way.

    Raised inside a task function, it fails the task at once with no retries left.
    """


class BackendUnavailable(TaskrelayError):
    """Redis (or another backing service) did not answer after bounded retries."""


class BackendFull(BackendUnavailable):
    """Redis answered but refuses writes: it reached its `maxmemory` (with `noeviction`, as the README asks).

    Passing, like an outage: memory comes back as results expire and history is trimmed, or when an operator
    raises the limit. So it is handled as one: the API answers 503 with Retry-After (RabbitMQ modes still
    accept, into RabbitMQ), the bridge holds its batch and retries, a worker restarts its loop.
    """


class IngressUnavailable(BackendUnavailable):
    """RabbitMQ did not answer, refused the connection, or did not confirm a message."""


class StorageError(TaskrelayError):
    """Redis answered a command with an error (a wrong type, a failing script): not a passing outage (a full
    Redis is BackendFull)."""


class PoisonMessage(TaskrelayError):
    """An ingress message that can never become a task; it goes to the dead-letter queue with this reason."""


class LaunchError(TaskrelayError):
    """A part of the system could not be started."""


class ApiKeyError(TaskrelayError):
    """An API key cannot be created or revoked as asked; `reason` says why, for the API's status."""

    INVALID, TAKEN, UNKNOWN, FIXED = "invalid", "taken", "unknown", "fixed"
    """Reasons: a bad name or scope; the name is in use; nothing matches; the bootstrap key (set by the environment)."""

    def __init__(self, message: str, reason: str = INVALID) -> None:
        super().__init__(message)
        self.reason = reason
