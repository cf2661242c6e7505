"""Unit tests of the data_processing task, called through the registry as the worker calls it."""

from __future__ import annotations

import json
from typing import Any

import pytest

import jobs.data_processing  # importing registers the task type
from core import registry
from core.errors import TaskInputError

ORDERS = [
    {"id": 1, "city": "Oslo", "amount": 120, "status": "paid"},
    {"id": 2, "city": "Bergen", "amount": 80, "status": "open"},
    {"id": 3, "city": "Oslo", "amount": 40, "status": "paid"},
    {"id": 4, "city": "Tromso", "amount": 200, "status": "refunded"},
    {"id": 5, "city": "Bergen", "amount": 15.5, "status": "paid"},
    {"id": 6, "city": "Oslo", "status": "open"},
]


def run(parameters: dict[str, Any]) -> dict[str, Any]:
    task_type = registry.get("data_processing")
    result: dict[str, Any] = task_type.func(task_type.parse_params(parameters))
    return result


def parse_error(parameters: dict[str, Any]) -> str:
    with pytest.raises(TaskInputError) as caught:
        registry.get("data_processing").parse_params(parameters)
    return str(caught.value)


def test_registered_with_retries_and_timeout() -> None:
    task_type = registry.get("data_processing")
    assert (task_type.max_retries, task_type.timeout_s) == (3, 300)
    assert task_type.params_model is jobs.data_processing.DataProcessingParams


def test_seed_example_echoes_data_and_counts_text() -> None:
    result = run({"data": "example data"})
    assert result["processed"] is True
    assert result["data"] == {"data": "example data"}
    assert result["result"] == {"length": 12, "words": 2, "lines": 1}
    assert result["operations"] == []


def test_extra_keys_are_accepted_and_left_out_of_the_echo() -> None:
    result = run({"data": "two\nlines here", "priority": "high"})
    assert result["data"] == {"data": "two\nlines here"}
    assert result["result"] == {"length": 14, "words": 3, "lines": 2}


def test_records_without_operations_come_back_unchanged() -> None:
    result = run({"data": ORDERS})
    assert result["result"] == ORDERS
    assert (result["rows_in"], result["rows_out"]) == (6, 6)


def test_single_record_is_one_row() -> None:
    result = run({"data": {"a": 1}, "operations": [{"op": "select", "fields": ["a"]}]})
    assert result["result"] == [{"a": 1}]
    assert result["rows_in"] == 1


def test_stats_over_numbers() -> None:
    result = run({"data": [4, 1, 3, 2], "operations": [{"op": "stats"}]})
    assert result["result"] == {"count": 4, "sum": 10, "mean": 2.5, "min": 1, "max": 4}


def test_stats_over_a_field_skips_records_missing_it() -> None:
    result = run({"data": ORDERS, "operations": [{"op": "stats", "field": "amount"}]})
    assert result["result"] == {"count": 5, "sum": 455.5, "mean": 91.1, "min": 15.5, "max": 200}
    assert result["operations"] == [{"op": "stats", "rows_in": 6, "rows_out": 6, "skipped": 1}]


def test_stats_of_nothing_has_null_mean() -> None:
    result = run({"data": [], "operations": [{"op": "stats"}]})
    assert result["result"] == {"count": 0, "sum": 0, "mean": None, "min": None, "max": None}


@pytest.mark.parametrize(
    ("cmp", "value", "ids"),
    [
        ("eq", "Oslo", [1, 3, 6]),
        ("ne", "Oslo", [2, 4, 5]),
        ("in", ["Bergen", "Tromso"], [2, 4, 5]),
        ("contains", "erg", [2, 5]),
    ],
)
def test_filter_on_text_field(cmp: str, value: Any, ids: list[int]) -> None:
    result = run({"data": ORDERS, "operations": [{"op": "filter", "field": "city", "cmp": cmp, "value": value}]})
    assert [row["id"] for row in result["result"]] == ids


@pytest.mark.parametrize(
    ("cmp", "value", "ids"),
    [("gt", 80, [1, 4]), ("gte", 80, [1, 2, 4]), ("lt", 80, [3, 5]), ("lte", 40, [3, 5])],
)
def test_filter_on_numeric_field_never_matches_missing(cmp: str, value: int, ids: list[int]) -> None:
    result = run({"data": ORDERS, "operations": [{"op": "filter", "field": "amount", "cmp": cmp, "value": value}]})
    assert [row["id"] for row in result["result"]] == ids
    assert result["operations"] == [{"op": "filter", "rows_in": 6, "rows_out": len(ids)}]


def test_filter_plain_numbers() -> None:
    result = run({"data": [5, 12, 7, 30], "operations": [{"op": "filter", "cmp": "gte", "value": 7}]})
    assert result["result"] == [12, 7, 30]


def test_sort_records_puts_missing_last_both_ways() -> None:
    ascending = run({"data": ORDERS, "operations": [{"op": "sort", "field": "amount"}]})
    assert [row["id"] for row in ascending["result"]] == [5, 3, 2, 1, 4, 6]
    descending = run({"data": ORDERS, "operations": [{"op": "sort", "field": "amount", "descending": True}]})
    assert [row["id"] for row in descending["result"]] == [4, 1, 2, 3, 5, 6]


def test_sort_numbers_without_field() -> None:
    result = run({"data": [3, 1.5, 2], "operations": [{"op": "sort", "descending": True}]})
    assert result["result"] == [3, 2, 1.5]


def test_sort_is_stable() -> None:
    result = run({"data": ORDERS, "operations": [{"op": "sort", "field": "status"}]})
    assert [row["id"] for row in result["result"]] == [2, 6, 1, 3, 5, 4]


def test_group_by_with_aggregates() -> None:
    aggregates = {
        "orders": {"fn": "count"},
        "priced": {"fn": "count", "field": "amount"},
        "total": {"fn": "sum", "field": "amount"},
        "average": {"fn": "mean", "field": "amount"},
        "smallest": {"fn": "min", "field": "amount"},
        "largest": {"fn": "max", "field": "amount"},
    }
    result = run({"data": ORDERS, "operations": [{"op": "group_by", "field": "city", "aggregates": aggregates}]})
    assert result["result"] == [
        {"city": "Oslo", "orders": 3, "priced": 2, "total": 160, "average": 80.0, "smallest": 40, "largest": 120},
        {"city": "Bergen", "orders": 2, "priced": 2, "total": 95.5, "average": 47.75, "smallest": 15.5, "largest": 80},
        {"city": "Tromso", "orders": 1, "priced": 1, "total": 200, "average": 200.0, "smallest": 200, "largest": 200},
    ]


def test_group_by_counts_by_default_and_groups_missing_under_null() -> None:
    data = [{"k": "a"}, {"x": 1}, {"k": "a"}, {"k": None}]
    result = run({"data": data, "operations": [{"op": "group_by", "field": "k"}]})
    assert result["result"] == [{"k": "a", "count": 2}, {"k": None, "count": 2}]


def test_dedupe_whole_records_keeps_first() -> None:
    data = [{"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": 1, "b": 3}]
    result = run({"data": data, "operations": [{"op": "dedupe"}]})
    assert result["result"] == [{"a": 1, "b": 2}, {"a": 1, "b": 3}]


def test_dedupe_numbers() -> None:
    result = run({"data": [3, 1, 3, 2, 1], "operations": [{"op": "dedupe"}]})
    assert result["result"] == [3, 1, 2]


def test_dedupe_by_fields() -> None:
    result = run({"data": ORDERS, "operations": [{"op": "dedupe", "fields": ["city", "status"]}]})
    assert [row["id"] for row in result["result"]] == [1, 2, 4, 5, 6]


def test_limit_and_select() -> None:
    operations = [{"op": "limit", "count": 2}, {"op": "select", "fields": ["city", "id"]}]
    result = run({"data": ORDERS, "operations": operations})
    assert result["result"] == [{"city": "Oslo", "id": 1}, {"city": "Bergen", "id": 2}]


def test_pipeline_runs_in_order_and_reports_each_step() -> None:
    operations = [
        {"op": "filter", "field": "status", "cmp": "in", "value": ["paid", "open"]},
        {"op": "dedupe", "fields": ["city"]},
        {"op": "sort", "field": "amount", "descending": True},
        {"op": "stats", "field": "amount"},
    ]
    result = run({"data": ORDERS, "operations": operations})
    assert result["result"] == {"count": 2, "sum": 200, "mean": 100.0, "min": 80, "max": 120}
    assert result["operations"] == [
        {"op": "filter", "rows_in": 6, "rows_out": 5},
        {"op": "dedupe", "rows_in": 5, "rows_out": 2},
        {"op": "sort", "rows_in": 2, "rows_out": 2},
        {"op": "stats", "rows_in": 2, "rows_out": 2, "skipped": 0},
    ]
    assert (result["rows_in"], result["rows_out"]) == (6, 2)
    assert result["data"]["operations"] == operations


def test_input_is_not_modified() -> None:
    data = [{"n": 2}, {"n": 1}]
    result = run({"data": data, "operations": [{"op": "sort", "field": "n"}]})
    assert data == [{"n": 2}, {"n": 1}]
    assert result["data"]["data"] == [{"n": 2}, {"n": 1}]
    assert result["result"] == [{"n": 1}, {"n": 2}]


def test_result_survives_json() -> None:
    operations = [{"op": "group_by", "field": "city", "aggregates": {"avg": {"fn": "mean", "field": "amount"}}}]
    result = run({"data": ORDERS, "operations": operations})
    assert json.loads(json.dumps(result)) == result


def test_unknown_op_names_the_allowed_ones() -> None:
    message = parse_error({"data": [1], "operations": [{"op": "sort"}, {"op": "pivot"}]})
    assert "parameters.operations.1" in message
    assert "'pivot'" in message
    for allowed in ("stats", "filter", "sort", "group_by", "dedupe", "limit", "select"):
        assert f"'{allowed}'" in message


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        ({}, "parameters.data: Field required"),
        ({"data": 5}, "data must be a list of records or values"),
        ({"data": [1, {"a": 1}]}, "mixes records"),
        ({"data": "text", "operations": [{"op": "sort"}]}, "data is text"),
        ({"data": [1], "operations": [{"op": "stats"}, {"op": "sort"}]}, "must be the last operation"),
        ({"data": [1], "operations": [{"op": "filter", "cmp": "in", "value": 1}]}, "needs a list"),
        ({"data": [1], "operations": [{"op": "filter", "cmp": "like", "value": 1}]}, "operations.0.filter.cmp"),
        ({"data": [1], "operations": [{"op": "sort", "feild": "x"}]}, "operations.0.sort.feild"),
        ({"data": [{}], "operations": [{"op": "group_by", "field": "k", "aggregates": {"s": {"fn": "sum"}}}]}, "sum"),
    ],
)
def test_bad_parameters_are_rejected_before_running(parameters: dict[str, Any], fragment: str) -> None:
    assert fragment in parse_error(parameters)


def test_stats_over_text_names_op_field_and_row() -> None:
    data = [{"x": 1}, {"x": "two"}]
    with pytest.raises(TaskInputError, match=r"operations\.1 \(stats\): field 'x' of item 1 is 'two', not a number"):
        run({"data": data, "operations": [{"op": "limit", "count": 5}, {"op": "stats", "field": "x"}]})


def test_stats_rejects_booleans() -> None:
    with pytest.raises(TaskInputError, match="is True, not a number"):
        run({"data": [1, True], "operations": [{"op": "stats"}]})


def test_sort_records_without_field_is_an_input_error() -> None:
    with pytest.raises(TaskInputError, match=r"operations\.0 \(sort\): the data are records; name the 'field'"):
        run({"data": ORDERS, "operations": [{"op": "sort"}]})


def test_sort_of_mixed_types_is_an_input_error() -> None:
    with pytest.raises(TaskInputError, match=r"operations\.0 \(sort\): field 'v' mix types"):
        run({"data": [{"v": 1}, {"v": "a"}], "operations": [{"op": "sort", "field": "v"}]})


def test_field_on_plain_values_is_an_input_error() -> None:
    with pytest.raises(TaskInputError, match=r"operations\.0 \(group_by\): 'field' is 'k' but the data are plain"):
        run({"data": [1, 2], "operations": [{"op": "group_by", "field": "k"}]})


def test_ordering_filter_on_text_is_an_input_error() -> None:
    with pytest.raises(
        TaskInputError, match=r"operations\.0 \(filter\): cannot test field 'city' value 'Oslo' with gt 5"
    ):
        run({"data": ORDERS, "operations": [{"op": "filter", "field": "city", "cmp": "gt", "value": 5}]})
