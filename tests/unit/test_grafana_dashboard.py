"""infra/grafana/taskrelay-dashboard.json: Grafana's import format, and only metrics GET /metrics really exports."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from tests.unit.test_metrics import StubPublisher

DASHBOARD = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "taskrelay-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
PROMQL_WORDS = {"sum", "max", "by", "rate", "histogram_quantile", "label_values"}
LABELS = {"task_type", "priority", "queue", "state", "le"}
SERIES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
"""The series names Prometheus stores for a family of each type."""


@pytest.fixture
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture
def exported(settings, fake_redis) -> dict[str, set[str]]:
    """Every family /metrics renders (RabbitMQ's included, through a stub) by name: the series it stores."""
    app = create_app(dataclasses.replace(settings, rabbitmq_url="amqp://guest:guest@127.0.0.1:1/%2F"), fake_redis)
    app.extensions["taskrelay"].ingress.publisher = StubPublisher()
    answer = app.test_client().get("/metrics")
    assert answer.status_code == 200
    return {
        family.name: {family.name + suffix for suffix in SERIES[family.type]}
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
    }


def expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in the dashboard: the panels' targets and the variables' queries."""
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return exprs + [variable["definition"] for variable in dashboard["templating"]["list"]]


def identifiers(expr: str) -> set[str]:
    """Return the names in `expr` that are neither string literals, nor $variables, nor numbers."""
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\$\w+", "", bare)
    return set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", bare))


def test_it_is_in_grafanas_import_format_with_a_prometheus_input(dashboard):
    [source] = dashboard["__inputs"]
    assert source == {**source, "name": "DS_PROMETHEUS", "type": "datasource", "pluginId": "prometheus"}
    required = {(item["type"], item["id"]) for item in dashboard["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= required
    assert dashboard["id"] is None  # Grafana assigns one on import
    assert dashboard["uid"] == "taskrelay" and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panel_ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    for panel in dashboard["panels"]:
        assert ("panel", panel["type"]) in required, panel["title"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert [t["refId"] for t in panel["targets"]] == [chr(65 + i) for i in range(len(panel["targets"]))]
        assert all(target["datasource"] == DATASOURCE for target in panel["targets"]), panel["title"]
    assert all(variable["datasource"] == DATASOURCE for variable in dashboard["templating"]["list"])


def test_every_expression_names_only_metrics_the_app_exports(dashboard, exported):
    series = set().union(*exported.values())
    for expr in expressions(dashboard):
        names = identifiers(expr)
        metrics = {name for name in names if name.startswith("taskrelay_")}
        assert metrics, f"no taskrelay_ metric in {expr!r}"
        assert metrics <= series, f"{sorted(metrics - series)} not exported by GET /metrics, in {expr!r}"
        assert names - metrics <= PROMQL_WORDS | LABELS, f"unknown names {sorted(names - metrics)} in {expr!r}"
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr


def test_every_exported_metric_has_a_panel(dashboard, exported):
    used = set().union(*(identifiers(expr) for expr in expressions(dashboard)))
    assert sorted(name for name, names in exported.items() if not names & used) == []
    assert len(exported) == 10  # the README's table: a new metric needs a panel here
