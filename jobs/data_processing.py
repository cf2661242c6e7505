"""The data_processing task: run a pipeline of operations over records, numbers or text.

`data` is a list of records (objects), a list of plain values, one record, or
text. `operations` run in order; each sees the previous one's rows. A field
that is absent or null counts as missing: stats and aggregates skip it, filters
never match it, sort puts it last, group_by groups it under null.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import TaskInputError
from core.registry import task

MISSING: Any = object()
"""What `_get` returns for an absent or null field, so callers can tell it from any real value."""


def _get(item: Any, field: str | None, where: str) -> Any:
    """Return the value an operation looks at: the item itself, or its `field` (MISSING when absent or null)."""
    if field is None:
        if isinstance(item, dict):
            raise TaskInputError(f"{where}: the data are records; name the 'field' to use")
        return MISSING if item is None else item
    if not isinstance(item, dict):
        raise TaskInputError(f"{where}: 'field' is {field!r} but the data are plain values, not records")
    value = item.get(field)
    return MISSING if value is None else value


def _subject(field: str | None) -> str:
    return f"field {field!r}" if field else "the values"


def _numbers(rows: list[Any], field: str | None, where: str) -> list[int | float]:
    """Return the numeric values of `field` (or of the items), skipping missing ones."""
    numbers: list[int | float] = []
    for index, item in enumerate(rows):
        value = _get(item, field, where)
        if value is MISSING:
            continue
        # bool is an int subclass, but True is not a number anyone means to add up
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TaskInputError(f"{where}: {_subject(field)} of item {index} is {value!r}, not a number")
        numbers.append(value)
    return numbers


def _summarize(numbers: list[int | float]) -> dict[str, Any]:
    total = sum(numbers)
    return {
        "count": len(numbers),
        "sum": total,
        "mean": total / len(numbers) if numbers else None,
        "min": min(numbers, default=None),
        "max": max(numbers, default=None),
    }


def _identity(value: Any) -> str:
    """Return a hashable key under which equal JSON values (even lists and objects) coincide."""
    return json.dumps(value, sort_keys=True, default=repr)


def _contains(actual: Any, wanted: Any) -> bool:
    if isinstance(actual, str | list):
        return wanted in actual
    raise TypeError("contains needs text or a list")


_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
    "in": lambda actual, wanted: actual in wanted,
    "contains": _contains,
}


class _Operation(BaseModel):
    # Unlike the top-level parameters, no old client sends operations, so a misspelt option fails loudly.
    model_config = ConfigDict(extra="forbid", defer_build=True)  # built by its first use, not at every cold start


class StatsOp(_Operation):
    """Summarize the numbers (or the numeric `field` of records): count, sum, mean, min, max."""

    op: Literal["stats"]
    field: str | None = None

    def summarize(self, rows: list[Any], where: str) -> dict[str, Any]:
        """Return count, sum, mean, min and max; mean, min and max are null when nothing was counted."""
        return _summarize(_numbers(rows, self.field, where))


class FilterOp(_Operation):
    """Keep the items whose `field` (or the item itself) compares true against `value`."""

    op: Literal["filter"]
    field: str | None = None
    cmp: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "contains"] = "eq"
    value: Any

    @model_validator(mode="after")
    def _in_needs_list(self) -> Self:
        if self.cmp == "in" and not isinstance(self.value, list):
            raise ValueError("cmp 'in' needs a list as 'value'")
        return self

    def apply(self, rows: list[Any], where: str) -> list[Any]:
        compare = _COMPARISONS[self.cmp]
        kept = []
        for item in rows:
            actual = _get(item, self.field, where)
            try:
                if actual is not MISSING and compare(actual, self.value):
                    kept.append(item)
            except TypeError:
                raise TaskInputError(
                    f"{where}: cannot test {_subject(self.field)} value {actual!r} with {self.cmp} {self.value!r}"
                ) from None
        return kept


class SortOp(_Operation):
    """Order the items by `field` (or by value), stably; items missing the field go last either way."""

    op: Literal["sort"]
    field: str | None = None
    descending: bool = False

    def apply(self, rows: list[Any], where: str) -> list[Any]:
        keyed = [(_get(item, self.field, where), item) for item in rows]
        present = [pair for pair in keyed if pair[0] is not MISSING]
        missing = [item for key, item in keyed if key is MISSING]
        try:
            present.sort(key=lambda pair: pair[0], reverse=self.descending)
        except TypeError:
            raise TaskInputError(
                f"{where}: {_subject(self.field)} mix types that cannot be ordered (e.g. numbers and text)"
            ) from None
        return [item for _, item in present] + missing


class Aggregate(BaseModel):
    """One output column of group_by: `fn` over `field` within each group."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built by its first use, not at every cold start

    fn: Literal["count", "sum", "mean", "min", "max"]
    field: str | None = None

    @model_validator(mode="after")
    def _needs_field(self) -> Self:
        if self.fn != "count" and self.field is None:
            raise ValueError(f"fn {self.fn!r} needs a 'field'")
        return self

    def compute(self, members: list[Any], where: str) -> Any:
        """Return the aggregate; count without a field counts rows, with one counts rows that have it."""
        if self.fn == "count":
            if self.field is None:
                return len(members)
            return sum(1 for item in members if _get(item, self.field, where) is not MISSING)
        return _summarize(_numbers(members, self.field, where))[self.fn]


class GroupByOp(_Operation):
    """Make one record per distinct `field` value (in order of first appearance) holding its `aggregates`."""

    op: Literal["group_by"]
    field: str
    aggregates: dict[str, Aggregate] = Field(default_factory=lambda: {"count": Aggregate(fn="count")})

    @model_validator(mode="after")
    def _names_differ_from_field(self) -> Self:
        if self.field in self.aggregates:
            raise ValueError(f"aggregate name {self.field!r} would overwrite the group field")
        return self

    def apply(self, rows: list[Any], where: str) -> list[Any]:
        groups: dict[str, tuple[Any, list[Any]]] = {}
        for item in rows:
            key = _get(item, self.field, where)
            key = None if key is MISSING else key
            groups.setdefault(_identity(key), (key, []))[1].append(item)
        grouped = []
        for key, members in groups.values():
            row = {self.field: key}
            for name, aggregate in self.aggregates.items():
                row[name] = aggregate.compute(members, f"{where} aggregate {name!r}")
            grouped.append(row)
        return grouped


class DedupeOp(_Operation):
    """Drop repeated items (whole item, or equal on `fields`), keeping the first of each."""

    op: Literal["dedupe"]
    fields: list[str] | None = Field(default=None, min_length=1)

    def apply(self, rows: list[Any], where: str) -> list[Any]:
        seen: set[str] = set()
        unique = []
        for item in rows:
            if self.fields is None:
                key = item
            elif isinstance(item, dict):
                key = [item.get(field) for field in self.fields]
            else:
                raise TaskInputError(f"{where}: 'fields' given but the data are plain values, not records")
            identity = _identity(key)
            if identity not in seen:
                seen.add(identity)
                unique.append(item)
        return unique


class LimitOp(_Operation):
    """Keep the first `count` items."""

    op: Literal["limit"]
    count: int = Field(ge=0)

    def apply(self, rows: list[Any], where: str) -> list[Any]:
        return rows[: self.count]


class SelectOp(_Operation):
    """Keep only `fields` of each record, in that order; a field a record lacks is left out, not nulled."""

    op: Literal["select"]
    fields: list[str] = Field(min_length=1)

    def apply(self, rows: list[Any], where: str) -> list[Any]:
        if any(not isinstance(item, dict) for item in rows):
            raise TaskInputError(f"{where}: select needs records, but the data are plain values")
        return [{field: item[field] for field in self.fields if field in item} for item in rows]


Operation = Annotated[
    StatsOp | FilterOp | SortOp | GroupByOp | DedupeOp | LimitOp | SelectOp,
    Field(discriminator="op"),
]


class DataProcessingParams(BaseModel):
    """Parameters of a data_processing task."""

    # Seed clients may send keys this task does not use; ignore them rather than reject the task.
    model_config = ConfigDict(extra="ignore", defer_build=True)  # built by its first use, not at every cold start

    data: Any
    operations: list[Operation] = Field(default_factory=list)

    @field_validator("data")
    @classmethod
    def _known_shape(cls, data: Any) -> Any:
        if isinstance(data, str | dict):
            return data
        if not isinstance(data, list):
            raise ValueError("data must be a list of records or values, one record (an object), or text")
        if len({isinstance(item, dict) for item in data}) > 1:
            raise ValueError("data mixes records (objects) with plain values; use one or the other")
        return data

    @model_validator(mode="after")
    def _pipeline_fits(self) -> Self:
        if self.operations and isinstance(self.data, str):
            raise ValueError("operations need a list of records or values, but data is text")
        for index, op in enumerate(self.operations[:-1]):
            if isinstance(op, StatsOp):
                raise ValueError(f"operations.{index}: stats summarizes the rows, so it must be the last operation")
        return self


def text_stats(text: str) -> dict[str, int]:
    """Return the length in characters and the word and line counts of `text`."""
    return {"length": len(text), "words": len(text.split()), "lines": len(text.splitlines())}


@task("data_processing", max_retries=3, timeout_s=300, params_model=DataProcessingParams)
def process(params: DataProcessingParams) -> dict[str, Any]:
    """Run the operations over the data in order and return the last one's output.

    `data` in the answer echoes the parameters as given (ignored keys left out);
    text counts as one row. Raises TaskInputError naming the operation when the
    data do not suit it.
    """
    echo = params.model_dump(mode="json", exclude_unset=True)
    rows: list[Any]
    result: Any
    if isinstance(params.data, str):
        rows, result = [params.data], text_stats(params.data)
    else:
        rows = [params.data] if isinstance(params.data, dict) else list(params.data)
        result = rows
    rows_in = len(rows)
    summaries: list[dict[str, Any]] = []
    for index, op in enumerate(params.operations):
        where = f"operations.{index} ({op.op})"
        before = len(rows)
        if isinstance(op, StatsOp):
            result = op.summarize(rows, where)
            summaries.append({"op": op.op, "rows_in": before, "rows_out": before, "skipped": before - result["count"]})
        else:
            rows = result = op.apply(rows, where)
            summaries.append({"op": op.op, "rows_in": before, "rows_out": len(rows)})
    return {
        "processed": True,
        "data": echo,
        "result": result,
        "operations": summaries,
        "rows_in": rows_in,
        "rows_out": len(rows),
    }
