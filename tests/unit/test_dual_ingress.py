"""INGRESS_MODE=dual (the default with RABBITMQ_URL): the API enqueues into RQ and publishes every task too; the
bridge takes the API's mark and creates nothing, or enqueues a task Redis lacks."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import fakeredis
import pika
import pytest

from app.ingress import DualIngress
from bridge.amqp.consumer import Delivery
from bridge.message import IN_REDIS_HEADER, Outgoing
from bridge.service import Bridge
from core import accepted
from core.errors import ConfigError, IngressUnavailable
from core.model import TaskRequest
from core.settings import Settings
from core.storage.keys import job_key
from core.storage.metrics import SUBMITTED_KEY
from core.workflow import Plan, StepJob
from tests.helpers import wait_until

SETTINGS_ENV = {"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/%2F", "TASKRELAY_TASK_MODULES": "tests.fixture_tasks"}
SETTINGS = Settings.from_env(SETTINGS_ENV)
QUEUE = "rq:queue:normal_priority"


def request(task_id: str) -> TaskRequest:
    return TaskRequest(task_id, "data_processing", "normal", {"data": [1]}, submitted_at="2026-01-01T00:00:00+00:00")


class Publishing:
    """Stands in for the publisher's `publish_many`: keeps what would have gone out; `fail` makes it raise as a
    RabbitMQ that does not answer, `refuse` nacks every message."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self.fail = False
        self.refuse = False

    def __call__(self, messages: Sequence[Outgoing]) -> list[str | None]:
        if self.fail:
            raise IngressUnavailable("RabbitMQ is not answering")
        self.sent.extend(messages)
        return ["RabbitMQ refused the message (nack)" if self.refuse else None] * len(messages)


class Acks:
    """Stands in for the bridge's consumer: records acks and dead letters."""

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.dead: list[str] = []

    def ack_through(self, tag: int) -> None:
        self.acked.append(tag)

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self.dead.append(reason)


class HeldPublish:
    """Stands in for the publisher's `publish_many` as a RabbitMQ that does not answer: records what it was given,
    holds until `release` is set, then raises as a publish that timed out; `over` says it has returned."""

    def __init__(self) -> None:
        self.sent: list[list[str]] = []
        self.entered, self.release, self.over = threading.Event(), threading.Event(), threading.Event()

    def __call__(self, messages: Sequence[Outgoing]) -> list[str | None]:
        self.sent.append([m.message_id for m in messages])
        self.entered.set()
        self.release.wait(10)
        self.over.set()
        raise IngressUnavailable("RabbitMQ is not answering")


def dual(connection: fakeredis.FakeRedis) -> tuple[DualIngress, Publishing]:
    ingress = DualIngress(connection, SETTINGS)
    publishing = Publishing()
    ingress.publisher.publish_many = publishing  # type: ignore[method-assign]
    return ingress, publishing


def deliveries(messages: list[Outgoing]) -> list[Delivery]:
    """The published messages as the bridge receives them (the header only where the API set it)."""
    return [
        Delivery(
            tag,
            m.body,
            False,
            pika.BasicProperties(message_id=m.message_id, headers={IN_REDIS_HEADER: 1} if m.in_redis else None),
        )
        for tag, m in enumerate(messages, start=1)
    ]


def bridged(connection: fakeredis.FakeRedis, messages: list[Outgoing]) -> tuple[Bridge, Acks]:
    from core import registry

    registry.load(SETTINGS.task_modules)
    bridge, acks = Bridge(SETTINGS, connection), Acks()
    assert bridge.handle(deliveries(messages), acks)  # type: ignore[arg-type]
    return bridge, acks


def workflows_plan(workflow_id: str) -> Plan:
    """A one-step workflow whose step's task id is t-<workflow_id>."""
    task_id = f"t-{workflow_id}"
    document = {"workflow_id": workflow_id, "name": None, "steps": {"a": {"task_id": task_id}}}
    return Plan(workflow_id, document, (StepJob("a", request(task_id), ()),))


def queued(connection: Any) -> list[bytes]:
    return connection.lrange(QUEUE, 0, -1)


def test_a_task_is_queued_in_rq_marked_and_published_flagged(fake_redis):
    ingress, publishing = dual(fake_redis)
    ingress.submit(request("d-1"))
    assert queued(fake_redis) == [b"d-1"]
    assert fake_redis.zscore(accepted.IN_REDIS_KEY, "d-1") is not None
    assert [(m.message_id, m.in_redis) for m in publishing.sent] == [("d-1", True)]
    assert accepted.get(fake_redis, "d-1") is None  # no "accepted" record: the job itself is there


def test_the_bridge_takes_the_mark_and_creates_nothing_then_a_redelivery_nothing_either(fake_redis):
    ingress, publishing = dual(fake_redis)
    ingress.submit(request("d-1"))
    before = fake_redis.hgetall(job_key("d-1"))
    bridge, acks = bridged(fake_redis, publishing.sent)
    assert (bridge.counters.in_redis, bridge.counters.moved, acks.acked) == (1, 0, [1])
    assert fake_redis.zcard(accepted.IN_REDIS_KEY) == 0
    assert queued(fake_redis) == [b"d-1"] and fake_redis.hgetall(job_key("d-1")) == before
    again, _ = bridged(fake_redis, publishing.sent)  # redelivered after its mark was taken: the job is found
    assert (again.counters.in_redis, again.counters.moved, again.counters.duplicates) == (0, 0, 1)
    assert queued(fake_redis) == [b"d-1"]


def test_a_task_redis_lost_is_enqueued_by_the_bridge_from_its_message(fake_redis):
    ingress, publishing = dual(fake_redis)
    ingress.submit(request("d-1"))
    fake_redis.flushdb()  # a Redis crash lost the enqueue (and its mark, written in the same transaction)
    bridge, _ = bridged(fake_redis, publishing.sent)
    assert (bridge.counters.in_redis, bridge.counters.moved) == (0, 1)
    assert queued(fake_redis) == [b"d-1"]


def test_with_redis_down_the_task_is_published_unflagged_and_the_bridge_enqueues_it():
    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    ingress, publishing = dual(connection)
    server.connected = False
    ingress.submit(request("d-1"))  # answered: RabbitMQ confirmed it
    assert [(m.message_id, m.in_redis) for m in publishing.sent] == [("d-1", False)]
    server.connected = True
    bridge, _ = bridged(connection, publishing.sent)
    assert bridge.counters.moved == 1 and queued(connection) == [b"d-1"]


@pytest.mark.parametrize("failure", ["fail", "refuse"])
def test_with_rabbitmq_not_taking_it_the_task_stays_queued_in_redis_without_its_mark(fake_redis, failure):
    ingress, publishing = dual(fake_redis)
    setattr(publishing, failure, True)
    ingress.submit(request("d-1"))  # no error: the answer is a 202, the task is in Redis
    assert queued(fake_redis) == [b"d-1"]
    assert fake_redis.zcard(accepted.IN_REDIS_KEY) == 0  # no message will come to take the mark


def test_with_both_down_the_submit_fails():
    server = fakeredis.FakeServer()
    ingress, publishing = dual(fakeredis.FakeRedis(server=server))
    server.connected = False
    publishing.fail = True
    with pytest.raises(IngressUnavailable):
        ingress.submit(request("d-1"))


def test_stale_marks_are_trimmed_with_the_records(fake_redis):
    accepted.mark_in_redis(fake_redis.pipeline(), [])  # nothing to mark: no command
    pipe = fake_redis.pipeline()
    accepted.mark_in_redis(pipe, ["old"])
    pipe.execute()
    assert accepted.trim(fake_redis, older_than_s=3600) == 0
    assert accepted.trim(fake_redis, older_than_s=-1) == 1
    assert fake_redis.zcard(accepted.IN_REDIS_KEY) == 0


def test_a_purge_counts_only_the_tasks_that_were_in_rabbitmq_alone_and_drops_the_marks(fake_redis):
    ingress, _ = dual(fake_redis)
    ingress.submit(request("d-1"))
    ingress.submit(request("d-2"))
    ingress.publisher.purge = lambda: 3  # type: ignore[method-assign]  # two marked messages, one published alone
    assert ingress.purge() == 1
    assert fake_redis.zcard(accepted.IN_REDIS_KEY) == 0


def test_a_task_is_enqueued_while_another_request_waits_for_its_confirm(fake_redis):
    ingress, _ = dual(fake_redis)
    entered, release = threading.Event(), threading.Event()

    def slow_confirm(messages: Sequence[Outgoing]) -> list[str | None]:
        entered.set()
        release.wait(10)
        return [None] * len(messages)

    ingress.publisher.publish_many = slow_confirm  # type: ignore[method-assign]
    first = threading.Thread(target=ingress.submit, args=(request("a"),))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=ingress.submit, args=(request("b"),))
    second.start()
    try:  # "b" is queued while "a" still waits for RabbitMQ (one flush of both steps would hold it back)
        wait_until(lambda: queued(fake_redis) == [b"a", b"b"], 5, "the second task in RQ")
    finally:
        release.set()
        first.join(10)
        second.join(10)


def test_over_the_rate_limit_tasks_are_recorded_and_published_for_the_bridge_and_back_under_it_enqueued(fake_redis):
    from app.ingress import RATE_WINDOW_S

    ingress, publishing = dual(fake_redis)
    now = [100.0]
    ingress.rate.clock = lambda: now[0]
    ingress.rate._start = now[0]
    limit = SETTINGS.dual_max_rate
    for n in range(int(limit * RATE_WINDOW_S) + 1):  # one window just over the limit: still enqueued (measured after)
        ingress.submit(request(f"calm-{n}"))
    now[0] += RATE_WINDOW_S
    ingress.submit(request("busy-1"))  # the window ended over the limit: the way of rabbitmq mode
    assert fake_redis.exists(job_key("busy-1")) == 0
    assert accepted.get(fake_redis, "busy-1") is not None  # PENDING, as in rabbitmq mode
    assert publishing.sent[-1].message_id == "busy-1" and not publishing.sent[-1].in_redis
    bridge, _ = bridged(fake_redis, publishing.sent[-1:])
    assert bridge.counters.moved == 1 and accepted.get(fake_redis, "busy-1") is None
    now[0] += RATE_WINDOW_S
    ingress.submit(request("calm-again"))  # that window had one task: under the limit again
    assert fake_redis.exists(job_key("calm-again")) == 1
    assert publishing.sent[-1].in_redis


def test_dual_max_rate_0_never_leaves_the_enqueue(fake_redis):
    import dataclasses

    ingress = DualIngress(fake_redis, dataclasses.replace(SETTINGS, dual_max_rate=0))
    ingress.publisher.publish_many = Publishing()  # type: ignore[method-assign]
    ingress.rate.per_s = 1e9  # whatever it measured
    ingress.rate.add = lambda tasks: 1e9  # type: ignore[method-assign]
    ingress.submit(request("d-1"))
    assert fake_redis.exists(job_key("d-1")) == 1
    with pytest.raises(ConfigError, match="DUAL_MAX_RATE must be 0 or more"):
        Settings.from_env({"DUAL_MAX_RATE": "-1"})


@pytest.mark.parametrize("failure", ["fail", "refuse"])
def test_a_workflow_rabbitmq_does_not_take_is_created_in_redis_and_answered_202(failure):
    from app import create_app

    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    app = create_app(Settings.from_env({**SETTINGS_ENV, "TASKRELAY_AUTH": "off"}), connection)
    publishing = Publishing()
    app.extensions["taskrelay"].ingress.publisher.publish_many = publishing
    client = app.test_client()
    steps = [{"id": "a", "task_type": "test_echo", "parameters": {}}, {"id": "b", "task_type": "test_echo"}]
    steps[1]["depends_on"] = ["a"]
    sent = client.post("/api/workflows", json={"steps": steps})  # RabbitMQ takes it: the bridge creates it
    assert sent.status_code == 202 and [m.message_id for m in publishing.sent] == [sent.json["workflow_id"]]
    assert client.get(f"/api/workflows/{sent.json['workflow_id']}").json["state"] == "PENDING"
    setattr(publishing, failure, True)
    answer = client.post("/api/workflows", json={"steps": steps})
    assert answer.status_code == 202, answer.json
    first = answer.json["steps"]["a"]["task_id"]
    assert queued(connection) == [first.encode()]  # created in Redis: its first step queued, the second waiting
    shown = client.get(f"/api/workflows/{answer.json['workflow_id']}").json
    assert {step["state"] for step in shown["steps"].values()} == {"PENDING"} and not shown.get("accepted")
    server.connected = False  # both down: nothing is accepted
    refused = client.post("/api/workflows", json={"steps": steps})
    assert refused.status_code == 503 and refused.headers["Retry-After"]


@pytest.mark.parametrize("failure", ["fail", "refuse"])
def test_over_the_rate_limit_a_task_rabbitmq_does_not_take_is_enqueued_into_redis_and_only_both_down_fails(failure):
    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    ingress, publishing = dual(connection)
    ingress.rate.add = lambda tasks: 1e9  # type: ignore[method-assign]  # always over the limit
    setattr(publishing, failure, True)
    ingress.submit(request("busy-1"))  # no error: the answer is a 202, the task is in Redis
    assert queued(connection) == [b"busy-1"]
    assert connection.zcard(accepted.IN_REDIS_KEY) == 0  # unmarked: no message will come for it
    assert accepted.get(connection, "busy-1") is None  # its accepted record gave way to the job
    assert list(connection.hgetall(SUBMITTED_KEY).values()) == [b"1"]  # counted once: the refusal took its count back
    server.connected = False
    with pytest.raises(IngressUnavailable):
        ingress.submit(request("busy-2"))


def test_after_rabbitmq_failed_to_answer_tasks_and_workflows_go_into_redis_only_for_the_pause(fake_redis):
    from app.ingress import RABBITMQ_PAUSE_S
    from core.storage import workflows

    ingress, publishing = dual(fake_redis)
    now = [100.0]
    ingress.rabbitmq_pause.clock = lambda: now[0]
    calls = []
    publish_many = publishing.__call__

    def counted(messages: Sequence[Outgoing]) -> list[str | None]:
        calls.append([m.message_id for m in messages])
        return publish_many(messages)

    ingress.publisher.publish_many = counted  # type: ignore[method-assign]
    publishing.fail = True
    ingress.submit(request("d-1"))  # tried, failed: 202 from Redis
    ingress.submit(request("d-2"))  # within the pause: RabbitMQ is not tried
    plan = workflows_plan("w-1")
    ingress.submit_workflow(plan)
    assert calls == [["d-1"]]
    assert queued(fake_redis) == [b"d-1", b"d-2", b"t-w-1"]
    assert fake_redis.zcard(accepted.IN_REDIS_KEY) == 0 and workflows.load(fake_redis, "w-1") is not None
    publishing.fail = False
    now[0] += RABBITMQ_PAUSE_S + 0.01
    ingress.submit(request("d-3"))  # the pause is over: published, flagged
    assert calls[-1] == ["d-3"] and publishing.sent[-1].in_redis


def test_tasks_that_come_while_a_publish_is_stalled_do_not_wait_for_it(fake_redis):
    from app.ingress import PUBLISH_STALL_S

    ingress, _ = dual(fake_redis)
    now = [100.0]
    ingress.rabbitmq_pause.clock = lambda: now[0]
    held = HeldPublish()
    ingress.publisher.publish_many = held  # type: ignore[method-assign]
    first = threading.Thread(target=ingress.submit, args=(request("a"),))
    first.start()
    try:
        assert held.entered.wait(10)
        now[0] += PUBLISH_STALL_S + 0.01
        ingress.submit(request("b"))  # returns at once (this thread would block on the held publish otherwise)
        assert queued(fake_redis) == [b"a", b"b"]
        assert fake_redis.zscore(accepted.IN_REDIS_KEY, "b") is None  # queued in Redis only
    finally:
        held.release.set()
        first.join(10)
    assert fake_redis.zcard(accepted.IN_REDIS_KEY) == 0  # "a"'s mark went with its failed publish


def test_within_the_pause_a_publish_skips_the_tasks_in_redis_and_tries_the_others(fake_redis):
    ingress, publishing = dual(fake_redis)
    ingress.rabbitmq_pause.start()
    pipe = fake_redis.pipeline()
    accepted.mark_in_redis(pipe, ["in-redis"])
    pipe.execute()
    waiting = [Outgoing(b"{}", "normal", "in-redis", True), Outgoing(b"{}", "normal", "only-here", False)]
    publishing.fail = True
    outcomes = ingress._publish(waiting)  # a flush that had waited behind the publish that failed
    assert outcomes[0] is None and isinstance(outcomes[1], IngressUnavailable)  # 202 from Redis; 503 (both down)
    assert fake_redis.zcard(accepted.IN_REDIS_KEY) == 0
    publishing.fail = False
    assert ingress._publish(waiting) == [None, None]
    assert [m.message_id for m in publishing.sent] == ["only-here"]  # the task in Redis was not tried


def test_a_task_queued_behind_a_stalled_publish_is_answered_from_redis_after_publish_stall_s(fake_redis, monkeypatch):
    import app.ingress

    monkeypatch.setattr(app.ingress, "PUBLISH_STALL_S", 0.05)
    ingress, _ = dual(fake_redis)
    ingress.rabbitmq_pause.clock = lambda: 100.0  # the stall is never seen by the first step: "b" is marked and waits
    held = HeldPublish()
    ingress.publisher.publish_many = held  # type: ignore[method-assign]
    first = threading.Thread(target=ingress.submit, args=(request("a"),))
    first.start()
    try:
        assert held.entered.wait(10)
        ingress.submit(request("b"))  # waits 0.05 s behind the held publish, then is answered: it is in Redis
        assert not held.over.is_set()  # answered while that publish still waited
        assert queued(fake_redis) == [b"a", b"b"]
        assert fake_redis.zscore(accepted.IN_REDIS_KEY, "b") is None  # no message will come for it
    finally:
        held.release.set()
        first.join(10)
    assert held.sent == [["a"]] and fake_redis.zcard(accepted.IN_REDIS_KEY) == 0
