"""The registry of task types: name -> function, default retries, timeout, parameter model, history kept.

A task type is a module-level function decorated with `@task(...)`. The API
validates `task_type` (and, when the task declares one, `parameters`) against
this registry; the worker looks the function up here by name. Built-in types
live in `jobs/`; custom ones live in any module named in TASKRELAY_TASK_MODULES.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from core.errors import TaskInputError, UnknownTaskType
from core.model import NO_RETENTION, Retention

M = TypeVar("M", bound=type[BaseModel])
_BUILDING = threading.Lock()


def built(model: M) -> M:
    """Return `model` with its validator built, building it now if it was declared with defer_build.

    pydantic builds a deferred model on first use, and that build is not thread-safe: two threads of one API
    process using the model for the first time at once can find it half built (pydantic's "this is a bug!
    please report it" assertion, or a wrong validation). Every first use goes through here: one build at a
    time, and a model already built costs one attribute read.
    """
    if not model.__pydantic_complete__:
        with _BUILDING:
            if not model.__pydantic_complete__:
                model.model_rebuild()
    return model


BUILTIN_MODULES = ("jobs.data_processing", "jobs.email_sending", "jobs.file_processing")
DEFAULT_MAX_RETRIES = 3
DEFAULT_TIMEOUT_S = 300
"""Longest one attempt of a task may run before RQ kills it, in seconds."""

TaskFunc = Callable[[Any], Any]


@dataclass(frozen=True)
class TaskType:
    """One registered task type."""

    name: str
    func: TaskFunc
    max_retries: int = DEFAULT_MAX_RETRIES
    timeout_s: int = DEFAULT_TIMEOUT_S
    params_model: type[BaseModel] | None = None
    description: str = ""
    retention: Retention = NO_RETENTION
    """History kept of this type's tasks, unless a submit says otherwise (unset: the environment's)."""

    def parse_params(self, parameters: dict[str, Any]) -> Any:
        """Return what the task function receives: the validated model, or the dict itself.

        Raises TaskInputError naming each bad field when the parameters do not fit the model.
        """
        if self.params_model is None:
            return parameters
        try:
            return built(self.params_model).model_validate(parameters)
        except ValidationError as exc:
            raise TaskInputError(describe_validation_error(exc, prefix="parameters")) from None


_registry: dict[str, TaskType] = {}


def task(
    name: str,
    *,
    max_retries: int = DEFAULT_MAX_RETRIES,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    params_model: type[BaseModel] | None = None,
    retention: Retention = NO_RETENTION,
) -> Callable[[TaskFunc], TaskFunc]:
    """Register the decorated module-level function as task type `name`."""
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    if timeout_s <= 0:
        raise ValueError("timeout_s must be > 0")
    if problems := retention.problems():
        raise ValueError(f"task type {name!r}: retention.{'; retention.'.join(problems)}")

    def register(func: TaskFunc) -> TaskFunc:
        existing = _registry.get(name)
        if existing is not None and existing.func is not func:
            same_place = (existing.func.__module__, existing.func.__qualname__) == (func.__module__, func.__qualname__)
            if not same_place:
                raise ValueError(f"task type {name!r} is already registered by {existing.func.__module__}")
        doc = (func.__doc__ or "").strip().splitlines()
        _registry[name] = TaskType(
            name=name,
            func=func,
            max_retries=max_retries,
            timeout_s=timeout_s,
            params_model=params_model,
            description=doc[0] if doc else "",
            retention=retention,
        )
        return func

    return register


def unregister(name: str) -> None:
    """Forget task type `name` (used by tests that register throw-away types)."""
    _registry.pop(name, None)


def load(modules: Iterable[str] = ()) -> None:
    """Import the built-in task modules and `modules`, registering their task types."""
    for module in (*BUILTIN_MODULES, *modules):
        importlib.import_module(module)


def build_models() -> None:
    """Build every registered type's parameter model now.

    The built-in models are declared with defer_build, so an API cold start (Lambda) does not pay for them. A
    worker builds them when it starts instead: otherwise a type's first run would include its model's build,
    and the batch worker sizes its claims from the durations it observes.
    """
    for spec in _registry.values():
        if spec.params_model is not None:
            built(spec.params_model)


def get(name: str) -> TaskType:
    """Return task type `name` or raise UnknownTaskType listing the known ones."""
    try:
        return _registry[name]
    except KeyError:
        raise UnknownTaskType(name, names()) from None


def names() -> list[str]:
    """Return the registered task type names, sorted."""
    return sorted(_registry)


def describe_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """Turn a pydantic ValidationError into one sentence naming every bad field."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        parts.append(f"{loc or prefix or 'body'}: {err['msg']}")
    return "; ".join(parts)
