"""GET /metrics on fakeredis: each counter path, the gauges, the histogram, auth; and the collector's edge cases."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.keys import create_key
from core import accepted
from core.model import TaskRequest
from core.storage import metrics
from core.storage.queues import SERIALIZER, worker_queues
from jobs.heartbeat import HeartbeatSimpleWorker
from tests.helpers import submit

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client, **headers: str) -> Samples:
    answer = client.get("/metrics", headers=headers or None)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_submitted_and_finished_are_counted_exactly_with_a_runtime_histogram(client, drain):
    for _ in range(3):
        submit(client)
    submit(client, priority="high")
    before = scrape(client)
    assert value(before, "taskrelay_tasks_submitted_total", task_type="data_processing", priority="normal") == 3
    assert value(before, "taskrelay_tasks_submitted_total", task_type="data_processing", priority="high") == 1
    assert value(before, "taskrelay_queue_length", queue="normal_priority", state="queued") == 3
    assert value(before, "taskrelay_queue_length", queue="high_priority", state="queued") == 1
    drain()
    after = scrape(client)
    finished = "taskrelay_tasks_finished_total"
    assert value(after, finished, task_type="data_processing", queue="normal_priority", state="SUCCESS") == 3
    assert value(after, finished, task_type="data_processing", queue="high_priority", state="SUCCESS") == 1
    assert value(after, "taskrelay_task_runtime_seconds_count", task_type="data_processing") == 4
    assert value(after, "taskrelay_task_runtime_seconds_bucket", task_type="data_processing", le="+Inf") == 4
    buckets = [
        value(after, "taskrelay_task_runtime_seconds_bucket", task_type="data_processing", le=str(bound))
        for bound in metrics.RUNTIME_BUCKETS_S
    ]
    assert None not in buckets
    assert buckets == sorted(b or 0 for b in buckets) and buckets[-1] == 4  # cumulative at render
    assert 0 < (value(after, "taskrelay_task_runtime_seconds_sum", task_type="data_processing") or 0) < 5
    assert value(after, "taskrelay_queue_length", queue="normal_priority", state="queued") == 0


@pytest.mark.parametrize("worker", ["batch", "simple"])
def test_the_queue_wait_histogram_counts_from_enqueue_to_start(client, fake_redis, drain, worker):
    from datetime import UTC, datetime, timedelta

    from rq.utils import utcformat

    from core.storage.keys import job_key

    ids = [submit(client, "test_echo", {}) for _ in range(3)]
    two_s_ago = utcformat(datetime.now(UTC) - timedelta(seconds=2))
    for task_id in ids:  # as if they had waited 2 s in the queue
        fake_redis.hset(job_key(task_id), "enqueued_at", two_s_ago)
    if worker == "batch":
        drain()
    else:
        HeartbeatSimpleWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER).work(
            burst=True, logging_level="WARNING"
        )
    samples = scrape(client)
    name = "taskrelay_task_queue_wait_seconds"
    assert value(samples, f"{name}_count", task_type="test_echo") == 3
    assert value(samples, f"{name}_bucket", task_type="test_echo", le="1.0") == 0
    assert value(samples, f"{name}_bucket", task_type="test_echo", le="2.5") == 3
    assert 6 <= (value(samples, f"{name}_sum", task_type="test_echo") or 0) < 7.5


def test_retries_and_final_failures_are_counted(client, drain):
    submit(client, "test_flaky", {"succeed_on": 3})
    submit(client, "test_bad_input", {})  # not retryable: fails at once despite max_retries=5
    drain()
    samples = scrape(client)
    assert value(samples, "taskrelay_task_retries_total", task_type="test_flaky") == 2
    assert value(samples, "taskrelay_task_retries_total", task_type="test_bad_input") is None
    finished = "taskrelay_tasks_finished_total"
    assert value(samples, finished, task_type="test_flaky", queue="normal_priority", state="SUCCESS") == 1
    assert value(samples, finished, task_type="test_bad_input", queue="normal_priority", state="FAILURE") == 1
    assert value(samples, "taskrelay_queue_length", queue="normal_priority", state="failed") == 1


def test_the_simple_worker_counts_successes_and_failures(client, fake_redis):
    submit(client, "test_echo", {"x": 1})
    submit(client, "test_bad_input", {})
    HeartbeatSimpleWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER).work(
        burst=True, logging_level="WARNING"
    )
    samples = scrape(client)
    finished = "taskrelay_tasks_finished_total"
    assert value(samples, finished, task_type="test_echo", queue="normal_priority", state="SUCCESS") == 1
    assert value(samples, finished, task_type="test_bad_input", queue="normal_priority", state="FAILURE") == 1
    assert value(samples, "taskrelay_task_runtime_seconds_count", task_type="test_echo") == 1


def test_a_task_canceled_in_the_batch_worker_counts_as_revoked(client, fake_redis, monkeypatch):
    from jobs.batch_worker import BatchWorker

    task_id = submit(client, "test_echo", {})
    worker = BatchWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER)
    worker._revoked.add(task_id)  # what a cancel's stop-job does to a claimed task that has not started
    worker.work(burst=True, logging_level="WARNING")
    samples = scrape(client)
    finished = "taskrelay_tasks_finished_total"
    assert value(samples, finished, task_type="test_echo", queue="normal_priority", state="REVOKED") == 1
    assert value(samples, finished, task_type="test_echo", queue="normal_priority", state="SUCCESS") is None


def test_a_task_canceled_while_running_in_a_simple_worker_counts_as_revoked(client, fake_redis):
    from core.storage.records import fetch_job
    from jobs import runner
    from jobs.interrupt import TaskRevoked

    job = fetch_job(fake_redis, submit(client, "test_flaky"))
    assert job is not None
    runner.on_failure(job, fake_redis, TaskRevoked, TaskRevoked("canceled"), None)
    samples = scrape(client)
    finished = "taskrelay_tasks_finished_total"
    assert value(samples, finished, task_type="test_flaky", queue="normal_priority", state="REVOKED") == 1
    assert value(samples, "taskrelay_task_retries_total", task_type="test_flaky") is None


def test_scheduled_tasks_workers_and_workflows_are_gauged(client, fake_redis, drain):
    from rq import Worker

    submit(client, delay_seconds=600)
    body = {"steps": [{"id": "a", "task_type": "test_echo", "parameters": {}}]}
    assert client.post("/api/workflows", json=body).status_code == 202
    worker = Worker(worker_queues(fake_redis), connection=fake_redis, name="gauged")
    worker.register_birth()
    worker.set_state("busy")
    samples = scrape(client)
    assert value(samples, "taskrelay_queue_length", queue="normal_priority", state="scheduled") == 1
    assert value(samples, "taskrelay_workers", state="busy") == 1
    assert value(samples, "taskrelay_workflows", state="PENDING") == 1
    worker.register_death()
    drain()
    samples = scrape(client)
    assert value(samples, "taskrelay_workflows", state="SUCCESS") == 1
    assert value(samples, "taskrelay_workflows", state="PENDING") is None


def test_bridge_lag_is_the_age_of_the_oldest_accepted_task(fake_redis, monkeypatch):
    requests = [TaskRequest(f"t{i}", "test_echo", "normal", {}, "2026-01-01T00:00:00+00:00") for i in range(2)]
    monkeypatch.setattr(accepted.time, "time", lambda: 1000.0)
    accepted.remember(fake_redis, requests[:1])
    monkeypatch.setattr(accepted.time, "time", lambda: 1030.0)
    accepted.remember(fake_redis, requests[1:])
    assert metrics.snapshot(fake_redis, now=1045.0).bridge_lag_s == 45.0
    accepted.forget(fake_redis, requests[:1])  # the bridge moved the oldest
    assert metrics.snapshot(fake_redis, now=1045.0).bridge_lag_s == 15.0
    accepted.forget(fake_redis, requests[1:])
    assert metrics.snapshot(fake_redis, now=1045.0).bridge_lag_s == 0.0


class StubPublisher:
    """Stands in for bridge.amqp's Publisher: refuses the messages whose task type is in `refuse`."""

    def __init__(self, refuse: str = "") -> None:
        self.refuse = refuse

    def publish_many(self, messages):
        return ["RabbitMQ refused the message (nack)" if self.refuse.encode() in m.body else None for m in messages]

    def message_counts(self):
        return {"taskrelay.ingress": 7, "taskrelay.ingress.dead": 2}

    def close(self):
        pass


def stubbed_app(settings, fake_redis, mode: str):
    rabbit = dataclasses.replace(settings, rabbitmq_url="amqp://guest:guest@127.0.0.1:1/%2F", ingress_mode=mode)
    app = create_app(rabbit, fake_redis)
    app.extensions["taskrelay"].ingress.publisher = StubPublisher(refuse="test_bad_input")
    return app


@pytest.fixture
def rabbit_app(settings, fake_redis):
    return stubbed_app(settings, fake_redis, "rabbitmq")


def test_the_rabbitmq_ingress_counts_at_accept_time_and_takes_back_refusals(rabbit_app, fake_redis):
    client = rabbit_app.test_client()
    submit(client, "test_echo", {})
    submit(client, "test_echo", {}, priority="low")
    assert client.post("/api/tasks", json={"task_type": "test_bad_input", "parameters": {}}).status_code == 503
    samples = scrape(client)
    submitted = "taskrelay_tasks_submitted_total"
    assert value(samples, submitted, task_type="test_echo", priority="normal") == 1
    assert value(samples, submitted, task_type="test_echo", priority="low") == 1
    assert value(samples, submitted, task_type="test_bad_input", priority="normal") is None  # counted, taken back
    assert value(samples, "taskrelay_ingress_messages", queue="taskrelay.ingress") == 7
    assert value(samples, "taskrelay_ingress_messages", queue="taskrelay.ingress.dead") == 2
    assert (value(samples, "taskrelay_bridge_lag_seconds") or 0) >= 0


def test_the_dual_ingress_counts_at_accept_time_and_keeps_a_refused_task_it_queued(settings, fake_redis):
    client = stubbed_app(settings, fake_redis, "dual").test_client()
    submit(client, "test_echo", {})
    answer = client.post("/api/tasks", json={"task_type": "test_bad_input", "parameters": {}})
    assert answer.status_code == 202  # RabbitMQ refused it, but it is queued in Redis
    assert fake_redis.exists(f"rq:job:{answer.json['task_id']}") == 1
    samples = scrape(client)
    submitted = "taskrelay_tasks_submitted_total"
    assert value(samples, submitted, task_type="test_echo", priority="normal") == 1
    assert value(samples, submitted, task_type="test_bad_input", priority="normal") == 1


def test_an_unreachable_rabbitmq_leaves_out_only_the_ingress_metric(settings, fake_redis):
    from tests.processes import free_port

    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    client = create_app(dataclasses.replace(settings, rabbitmq_url=url), fake_redis).test_client()
    samples = scrape(client)
    assert not [name for name, _ in samples if name.startswith("taskrelay_ingress")]
    assert value(samples, "taskrelay_bridge_lag_seconds") == 0


def test_metrics_need_a_read_key_unless_public(app, fake_redis, settings):
    anonymous = app.test_client()
    anonymous.api_key = None
    assert anonymous.get("/metrics").status_code == 401
    reader = app.test_client()
    reader.api_key = create_key(fake_redis, "prometheus", ["read"])
    assert scrape(reader) is not None
    public: Any = create_app(dataclasses.replace(settings, metrics_public=True), fake_redis).test_client()
    public.api_key = None
    assert scrape(public) is not None
    assert public.get("/api/tasks").status_code == 401  # only /metrics opens


def test_openmetrics_is_served_when_asked_for(client):
    answer = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
    assert answer.get_data(as_text=True).rstrip().endswith("# EOF")


def test_metrics_answer_503_when_redis_is_down(settings):
    from core.connection import connect
    from tests.processes import free_port

    client = create_app(settings, connect(f"redis://127.0.0.1:{free_port()}/0")).test_client()
    answer = client.get("/metrics")
    assert answer.status_code == 503 and answer.json["error"] == "service_unavailable"


def test_a_tally_gathers_one_command_per_field_and_rewrites_on_a_retried_transaction(fake_redis):
    tally = metrics.Tally()
    for _ in range(50):
        tally.finished("t", "normal_priority", "SUCCESS", 0.001)
    pipe = fake_redis.pipeline(transaction=False)
    tally.write(pipe)
    assert len(pipe.command_stack) == 3  # finished, one bucket, the sum: for 50 tasks
    tally.write(pipe)  # a WatchError makes enqueue_batch build its transaction again: the counts must be there
    assert len(pipe.command_stack) == 6
    tally.clear()
    assert not tally


def test_a_submit_whose_enqueue_fails_is_not_counted(client, fake_redis, monkeypatch):
    import redis
    from redis.client import Pipeline
    from redis.commands.core import Script

    real_execute, real_script = Pipeline.execute, Script.__call__

    def lost(self, *args, **kwargs):
        if self.transaction:  # the enqueue's MULTI/EXEC, which carries the count
            raise redis.ConnectionError("connection lost")
        return real_execute(self, *args, **kwargs)

    def lost_script(self, *args, **kwargs):  # the enqueue's one-script first delivery, which carries it too
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(Pipeline, "execute", lost)
    monkeypatch.setattr(Script, "__call__", lost_script)
    answer = client.post("/api/tasks", json={"task_type": "test_echo", "parameters": {}})
    assert answer.status_code == 503
    monkeypatch.setattr(Pipeline, "execute", real_execute)
    monkeypatch.setattr(Script, "__call__", real_script)
    assert not fake_redis.exists(metrics.SUBMITTED_KEY)
    submit(client, "test_echo", {})
    assert value(scrape(client), "taskrelay_tasks_submitted_total", task_type="test_echo", priority="normal") == 1


def test_a_cancel_of_a_waiting_task_counts_it_as_revoked(client, drain):
    queued = submit(client, "test_echo", {})
    delayed = submit(client, "test_echo", {}, priority="low", delay_seconds=600)
    for task_id in (queued, delayed):
        assert client.post(f"/api/tasks/{task_id}/cancel").status_code == 200
    assert client.post(f"/api/tasks/{queued}/cancel").status_code == 409  # counted once, not per request
    drain()
    samples = scrape(client)
    finished = "taskrelay_tasks_finished_total"
    assert value(samples, finished, task_type="test_echo", queue="normal_priority", state="REVOKED") == 1
    assert value(samples, finished, task_type="test_echo", queue="low_priority", state="REVOKED") == 1
    assert value(samples, finished, task_type="test_echo", queue="normal_priority", state="SUCCESS") is None


def test_a_cancel_of_a_task_still_in_the_rabbitmq_ingress_counts_it_as_revoked(rabbit_app):
    client = rabbit_app.test_client()
    task_id = submit(client, "test_echo", {}, priority="high")
    assert client.post(f"/api/tasks/{task_id}/cancel").status_code == 200
    samples = scrape(client)
    finished = "taskrelay_tasks_finished_total"
    assert value(samples, finished, task_type="test_echo", queue="high_priority", state="REVOKED") == 1
    assert value(samples, "taskrelay_tasks_submitted_total", task_type="test_echo", priority="high") == 1


def test_workflow_steps_and_map_elements_count_as_submitted_once(client, drain):
    steps = [
        {"id": "source", "task_type": "test_echo", "parameters": {"rows": [1, 2, 3]}},
        {
            "id": "each",
            "task_type": "test_sum",
            "parameters": {"values": [{"$item": ""}]},
            "depends_on": ["source"],
            "map": {"$from": "source", "path": "/echo/rows"},
        },
    ]
    answer = client.post("/api/workflows", json={"steps": steps}, headers={"Idempotency-Key": "once"})
    client.post("/api/workflows", json={"steps": steps}, headers={"Idempotency-Key": "once"})  # a replay
    assert answer.status_code == 202
    drain()
    samples = scrape(client)
    assert value(samples, "taskrelay_tasks_submitted_total", task_type="test_echo", priority="normal") == 1
    # the map step itself, then its three elements
    assert value(samples, "taskrelay_tasks_submitted_total", task_type="test_sum", priority="normal") == 4


def test_a_manual_retry_counts_as_a_submission_and_a_refused_one_does_not(client, drain):
    """Its new attempt finishes again, so submitted minus finished still counts what is in flight."""
    failed = submit(client, "test_bad_input", {})
    done = submit(client, "test_echo", {})
    drain()
    assert client.post(f"/api/tasks/{failed}/retry").status_code == 202
    assert client.post(f"/api/tasks/{done}/retry").status_code == 409  # a SUCCESS: refused, not counted
    drain()
    samples = scrape(client)
    submitted, finished = "taskrelay_tasks_submitted_total", "taskrelay_tasks_finished_total"
    assert value(samples, submitted, task_type="test_bad_input", priority="normal") == 2
    assert value(samples, submitted, task_type="test_echo", priority="normal") == 1
    assert value(samples, finished, task_type="test_bad_input", queue="normal_priority", state="FAILURE") == 2
