"""Taskrelay's metrics in Prometheus's text format, rendered from Redis at scrape time: the one module that
uses prometheus_client (GET /metrics in app/metrics.py imports it on its first scrape, not at start).

Nothing is counted in this process: `TaskrelayCollector` reads the counters every
process adds to in Redis (core/storage/metrics.py) and the gauges (queues,
workers, bridge lag, workflows, RabbitMQ's queues) when Prometheus asks, so
every API process, and every Lambda container, answers the same numbers.
Names follow celery-exporter's and BullMQ's, under `taskrelay_`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from app import workflows
from app.ingress import Ingress
from core.connection import redis_errors
from core.errors import IngressUnavailable
from core.storage import metrics
from core.storage import workflows as stored_workflows

log = logging.getLogger("taskrelay.api")


WORKFLOW_SCAN_LIMIT = 1000
"""taskrelay_workflows counts the states of the newest this many workflows: a workflow's state is computed from
its steps' when read, so a scrape reads them all (pipelined: ~0.2 ms per 10-step workflow on a local Redis)."""


def workflow_states(connection: redis.Redis, limit: int = WORKFLOW_SCAN_LIMIT) -> dict[str, int]:
    """Return how many of the newest `limit` workflows are in each state."""
    entries = workflows.listed(connection, stored_workflows.list_ids(connection, 0, limit - 1))
    return dict(Counter(entry["state"] for entry in entries))


class TaskrelayCollector(Collector):
    """Yield every taskrelay_ metric from one Redis snapshot (and RabbitMQ's counts when there is an ingress)."""

    def __init__(self, connection: redis.Redis, ingress: Ingress | None = None) -> None:
        self.connection = connection
        self.ingress = ingress

    def collect(self) -> Iterator[Metric]:
        with redis_errors():
            snap = metrics.snapshot(self.connection)
            flows = workflow_states(self.connection)
        yield from _counters(snap)
        yield _histogram(
            "taskrelay_task_runtime_seconds",
            "How long successful tasks ran, in seconds",
            snap.runtime,
            snap.runtime_sum,
        )
        yield _histogram(
            "taskrelay_task_queue_wait_seconds",
            "How long successful tasks waited in their queue, from their last enqueue to their start, in seconds",
            snap.wait,
            snap.wait_sum,
        )
        queue_length = GaugeMetricFamily(
            "taskrelay_queue_length", "Tasks in each queue by state", labels=["queue", "state"]
        )
        for (queue, state), n in snap.queue_length.items():
            queue_length.add_metric([queue, state], n)
        yield queue_length
        workers = GaugeMetricFamily("taskrelay_workers", "Registered RQ workers by state", labels=["state"])
        for state, n in sorted(snap.workers.items()):
            workers.add_metric([state], n)
        yield workers
        yield GaugeMetricFamily(
            "taskrelay_bridge_lag_seconds",
            "Age of the oldest task accepted by the API and not yet moved into RQ by the bridge (0: none)",
            value=snap.bridge_lag_s,
        )
        states = GaugeMetricFamily(
            "taskrelay_workflows", f"Workflows by state (the newest {WORKFLOW_SCAN_LIMIT})", labels=["state"]
        )
        for state, n in sorted(flows.items()):
            states.add_metric([state], n)
        yield states
        yield from self._ingress()

    def _ingress(self) -> Iterator[Metric]:
        if self.ingress is None:
            return
        try:
            counts = self.ingress.message_counts()
        except IngressUnavailable as exc:
            log.warning("taskrelay_ingress_messages left out: %s", exc)
            return
        if not counts:
            return  # no RabbitMQ ingress
        family = GaugeMetricFamily(
            "taskrelay_ingress_messages",
            "Messages ready in the RabbitMQ ingress queue and its dead-letter queue",
            labels=["queue"],
        )
        for queue, n in counts.items():
            family.add_metric([queue], n)
        yield family


def _counters(snap: metrics.Snapshot) -> Iterator[Metric]:
    specs: list[tuple[str, str, list[str], dict[tuple[str, ...], int]]] = [
        ("taskrelay_tasks_submitted", "Tasks accepted by POST /api/tasks", ["task_type", "priority"], snap.submitted),
        (
            "taskrelay_tasks_finished",
            "Tasks that ended, by final state (SUCCESS, FAILURE, REVOKED)",
            ["task_type", "queue", "state"],
            snap.finished,
        ),
        ("taskrelay_task_retries", "Failed attempts that will be retried", ["task_type"], snap.retries),
    ]
    for name, documentation, labels, values in specs:
        family = CounterMetricFamily(name, documentation, labels=labels)
        for label_values, n in sorted(values.items()):
            family.add_metric(list(label_values), n)
        yield family


def _histogram(name: str, documentation: str, counts: dict[str, dict[str, int]], sums: dict[str, float]) -> Metric:
    family = HistogramMetricFamily(name, documentation, labels=["task_type"])
    for task_type, per_bucket in sorted(counts.items()):
        cumulative, buckets = 0, []
        for bound in [*(repr(b) for b in metrics.RUNTIME_BUCKETS_S), metrics.INF]:
            cumulative += per_bucket.get(bound, 0)
            buckets.append((bound, cumulative))
        family.add_metric([task_type], buckets, sums.get(task_type, 0.0))
    return family


def render(connection: redis.Redis, ingress: Ingress | None, accept: str = "") -> tuple[bytes, str]:
    """Return (body, content type) of every taskrelay_ metric, in the format `accept` asks for (Prometheus's text
    format 0.0.4 unless OpenMetrics is asked for); BackendUnavailable if Redis is down."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TaskrelayCollector(connection, ingress))
    encode, content_type = choose_encoder(accept)
    return encode(registry), content_type
