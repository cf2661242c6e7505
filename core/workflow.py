"""Workflows as data: the step graph, its checks (duplicates, unknown parents, cycles, references) and the
`{"$from": step, "path": pointer}` references that feed one step's result into another's parameters.

Pure functions: the API checks a workflow with them before anything is written,
and the worker resolves a step's references with them when the step starts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.model import NO_RETENTION, PRIORITIES, Retention, TaskRequest

REF = "$from"
"""A parameter value `{"$from": "<step id>", "path": "<JSON Pointer>"}` is replaced by that part of the result."""
ITEM = "$item"
"""In a map step's parameters, a value `{"$item": "<JSON Pointer>"}` is replaced by that part of its element."""
MAX_STEPS = 2000
"""Most steps one workflow may have."""
MAX_MAP_ITEMS = 10_000
"""Most elements one map step may fan out to (one task each)."""


class WorkflowInvalid(ValueError):
    """A workflow that cannot run as submitted; `field` names where (steps[3].depends_on...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ReferenceMissing(LookupError):
    """A step's reference names a path its ancestor's result does not have."""


@dataclass(frozen=True)
class MapOver:
    """A map step's list: `path` of ancestor `source`'s result; one task per element, at most `max_concurrency`
    at once, and how many may fail (a count, a percentage, or both: the larger allowance wins)."""

    source: str
    path: str = ""
    max_concurrency: int | None = None
    tolerated_failures: int = 0
    tolerated_failure_percent: float = 0.0

    def allowed_failures(self, total: int) -> int:
        """Return how many of `total` elements may fail with the map step still succeeding."""
        return max(self.tolerated_failures, int(total * self.tolerated_failure_percent / 100))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form kept in the workflow's document."""
        return {
            "source": self.source,
            "path": self.path,
            "max_concurrency": self.max_concurrency,
            "tolerated_failures": self.tolerated_failures,
            "tolerated_failure_percent": self.tolerated_failure_percent,
        }

    @classmethod
    def from_dict(cls, fields: Mapping[str, Any]) -> MapOver:
        """Read the JSON form kept in the workflow's document."""
        return cls(**fields)


@dataclass(frozen=True)
class StepSpec:
    """One step as submitted: its id, task type, parameters and the steps it waits for."""

    id: str
    task_type: str
    parameters: dict[str, Any]
    depends_on: tuple[str, ...] = ()
    priority: str | None = None
    max_retries: int | None = None
    allow_failure: tuple[str, ...] = field(default=())
    """Parents whose failure this step tolerates."""
    map: MapOver | None = None
    """Set for a map step: its parameters are a template run once per element of that list."""
    retention: Retention = NO_RETENTION
    """History kept of this step's task (of each element's, for a map step)."""


@dataclass(frozen=True)
class StepJob:
    """One step to create: its id in the workflow, its task, and the task ids of its parents."""

    step_id: str
    request: TaskRequest
    parent_task_ids: tuple[str, ...]
    tolerates_failure: bool = False
    """Some parent's failure is tolerated: RQ's check then lets failed parents pass (an untolerated failure
    cancels this step first, see core.storage.workflows.settle_failed)."""
    is_map: bool = False
    """A map step: its task id is the step's collector, and a spawner waits on the parents (core.storage.maps)."""


@dataclass(frozen=True)
class Plan:
    """A checked workflow, ready to create: its document (name, steps, parents, on_failure) and its jobs, parents
    first. The API builds it; the direct ingress creates it, the RabbitMQ ingress carries it as one message."""

    workflow_id: str
    document: dict[str, Any]
    steps: tuple[StepJob, ...]

    @property
    def priority(self) -> str:
        """The priority the workflow travels at: its highest step's."""
        return min((step.request.priority for step in self.steps), key=PRIORITIES.index)


def references(value: Any, marker: str = REF) -> Iterator[dict[str, Any]]:
    """Yield every `{"$from": ...}` object inside `value` (nested dicts and lists); with `marker` ITEM, every
    `{"$item": ...}` one."""
    if isinstance(value, dict):
        if marker in value:
            yield value
            return
        for item in value.values():
            yield from references(item, marker)
    elif isinstance(value, list):
        for item in value:
            yield from references(item, marker)


def _check_pointer(where: str, path: Any) -> None:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise WorkflowInvalid(where, f"path must be a JSON Pointer such as '/rows' or '', got {path!r}")


def order(steps: Sequence[StepSpec]) -> list[StepSpec]:
    """Check the graph and return the steps parents first; raise WorkflowInvalid naming the step and field."""
    if not steps:
        raise WorkflowInvalid("steps", "a workflow needs at least one step")
    if len(steps) > MAX_STEPS:
        raise WorkflowInvalid("steps", f"at most {MAX_STEPS} steps, got {len(steps)}")
    index: dict[str, int] = {}
    for n, step in enumerate(steps):
        if step.id in index:
            raise WorkflowInvalid(f"steps[{n}].id", f"duplicate step id {step.id!r} (also steps[{index[step.id]}])")
        index[step.id] = n
    for n, step in enumerate(steps):
        for parent in step.depends_on:
            if parent not in index:
                raise WorkflowInvalid(f"steps[{n}].depends_on", f"unknown step {parent!r}; known: {sorted(index)}")
            if parent == step.id:
                raise WorkflowInvalid(f"steps[{n}].depends_on", f"step {step.id!r} depends on itself")
        for parent in step.allow_failure:
            if parent not in step.depends_on:
                raise WorkflowInvalid(f"steps[{n}].allow_failure", f"{parent!r} is not in this step's depends_on")
    _reject_cycles(steps, index)
    ordered = _parents_first(steps)
    ancestors = ancestors_of(ordered)
    for n, step in enumerate(steps):
        for ref in references(step.parameters):
            source, path = ref.get(REF), ref.get("path", "")
            where = f"steps[{n}].parameters"
            if not isinstance(source, str) or source not in index:
                raise WorkflowInvalid(where, f"{REF} must name a step of this workflow, got {source!r}")
            if source not in ancestors[step.id]:
                raise WorkflowInvalid(where, f"{REF} {source!r} is not an ancestor of step {step.id!r}")
            _check_pointer(where, path)
        items = list(references(step.parameters, ITEM))
        if items and step.map is None:
            raise WorkflowInvalid(f"steps[{n}].parameters", f"{ITEM} is only allowed in a step with a map")
        for ref in items:
            _check_pointer(f"steps[{n}].parameters", ref[ITEM])
        if step.map is not None:
            if step.map.source not in ancestors[step.id]:
                raise WorkflowInvalid(f"steps[{n}].map", f"{REF} {step.map.source!r} is not an ancestor of {step.id!r}")
            _check_pointer(f"steps[{n}].map", step.map.path)
    return ordered


def _reject_cycles(steps: Sequence[StepSpec], index: Mapping[str, int]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in steps:
        if state.get(start.id):
            continue
        path: list[str] = []
        stack: list[tuple[str, Iterator[str]]] = [(start.id, iter(steps[index[start.id]].depends_on))]
        state[start.id] = 1
        path.append(start.id)
        while stack:
            node, parents = stack[-1]
            parent = next(parents, None)
            if parent is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(parent) == 1:
                cycle = [*path[path.index(parent) :], parent]
                raise WorkflowInvalid("steps", "cycle: " + " -> ".join(reversed(cycle)))
            elif not state.get(parent):
                state[parent] = 1
                path.append(parent)
                stack.append((parent, iter(steps[index[parent]].depends_on)))


def _parents_first(steps: Sequence[StepSpec]) -> list[StepSpec]:
    done: set[str] = set()
    ordered: list[StepSpec] = []
    remaining = list(steps)
    while remaining:
        ready = [step for step in remaining if all(parent in done for parent in step.depends_on)]
        ordered += ready
        done.update(step.id for step in ready)
        remaining = [step for step in remaining if step.id not in done]
    return ordered


def ancestors_of(ordered: Sequence[StepSpec]) -> dict[str, set[str]]:
    """Return each step's ancestors, given the steps parents first."""
    ancestors: dict[str, set[str]] = {}
    for step in ordered:
        ancestors[step.id] = set(step.depends_on).union(*(ancestors[p] for p in step.depends_on))
    return ancestors


def descendants_of(
    step_id: str, depends_on: Mapping[str, Sequence[str]], tolerated: Mapping[str, Sequence[str]] | None = None
) -> list[str]:
    """Return every step that waits, directly or not, on `step_id` (`depends_on`: step -> its parents).

    With `tolerated` (step -> parents whose failure it tolerates), an edge from a
    tolerated parent is not followed: the steps a failure leaves unable to run.
    """
    children: dict[str, list[str]] = {}
    for child, parents in depends_on.items():
        for parent in parents:
            if tolerated is None or parent not in tolerated.get(child, ()):
                children.setdefault(parent, []).append(child)
    found: list[str] = []
    frontier = list(children.get(step_id, []))
    while frontier:
        child = frontier.pop()
        if child not in found:
            found.append(child)
            frontier += children.get(child, [])
    return found


def pointer(document: Any, path: str) -> Any:
    """Return the part of `document` at JSON Pointer `path` (RFC 6901); raise ReferenceMissing if absent."""
    if path == "":
        return document
    value = document
    for raw in path[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise ReferenceMissing(f"no {token!r} at {path!r}")
    return value


@dataclass(frozen=True)
class Failed:
    """What a reference to a parent that failed (and whose failure is tolerated) resolves to: its error."""

    error: dict[str, Any]


_NO_ITEM = object()


def resolve(parameters: Any, result_of: Mapping[str, Any], item: Any = _NO_ITEM) -> Any:
    """Return `parameters` with every reference replaced by its step's result part (ReferenceMissing if absent),
    and, given a map element `item`, every `{"$item": pointer}` by that part of it.

    A reference to a Failed parent becomes `{"error": {...}}`, whatever its path.
    """
    if isinstance(parameters, dict):
        if ITEM in parameters and item is not _NO_ITEM:
            try:
                return pointer(item, parameters[ITEM])
            except ReferenceMissing as exc:
                raise ReferenceMissing(f"{ITEM} {parameters[ITEM]!r}: the element has {exc}") from None
        if REF in parameters:
            source, path = parameters[REF], parameters.get("path", "")
            if isinstance(result_of.get(source), Failed):
                return {"error": result_of[source].error}
            try:
                return pointer(result_of[source], path)
            except ReferenceMissing as exc:
                raise ReferenceMissing(f"{REF} {source!r} path {path!r}: the result has {exc}") from None
        return {key: resolve(value, result_of, item) for key, value in parameters.items()}
    if isinstance(parameters, list):
        return [resolve(value, result_of, item) for value in parameters]
    return parameters


def map_items(result_of: Mapping[str, Any], over: MapOver) -> list[Any]:
    """Return the list a map step fans out over; raise ReferenceMissing saying why there is none."""
    source = result_of.get(over.source)
    if isinstance(source, Failed):
        raise ReferenceMissing(f"map {REF} {over.source!r}: that step failed ({source.error.get('message')})")
    try:
        items = pointer(source, over.path)
    except ReferenceMissing as exc:
        raise ReferenceMissing(f"map {REF} {over.source!r} path {over.path!r}: the result has {exc}") from None
    if not isinstance(items, list):
        raise ReferenceMissing(f"map {REF} {over.source!r} path {over.path!r} is a {type(items).__name__}, not a list")
    if len(items) > MAX_MAP_ITEMS:
        raise ReferenceMissing(f"map {REF} {over.source!r}: {len(items)} elements, over the limit of {MAX_MAP_ITEMS}")
    return items
