"""The RabbitMQ ingress against the real RabbitMQ and Redis: publish, bridge, dedupe, poison, faults."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pika
import pytest
import redis
from rq import SimpleWorker
from rq.job import Job

from app import create_app
from bridge.amqp.consumer import REASON_HEADER, Consumer
from bridge.amqp.publisher import Publisher
from bridge.amqp.topology import AMQP_PRIORITY, Topology
from bridge.message import Outgoing, TaskEnvelope
from bridge.service import Bridge
from core.connection import connect
from core.errors import IngressUnavailable
from core.model import TaskRequest
from core.settings import Settings
from core.storage import idempotency
from core.storage.queues import SERIALIZER, all_queues
from tests.conftest import require_tool
from tests.helpers import keyed_settings, submit_concurrently, wait_until
from tests.processes import ROOT, free_port, private_redis, redis_full
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]

SEED_TASK = {"task_type": "data_processing", "priority": "high", "parameters": {"data": "example data"}}


@pytest.fixture
def make_client():
    """Build API test clients; their RabbitMQ and Redis connections are closed after the test."""
    apps = []

    def make(settings: Settings, connection: redis.Redis):
        app = create_app(settings, connection)
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions["taskrelay"].ingress.close()
        app.extensions["taskrelay"].connection.close()  # else a later test's garbage collection finds it unclosed


def settings_for(redis_url: str, rabbitmq_url: str, queue: str, **extra: str) -> Settings:
    """Settings of the bridge-only path (INGRESS_MODE=rabbitmq) unless `extra` names another mode."""
    return keyed_settings(
        {
            "REDIS_URL": redis_url,
            "RABBITMQ_URL": rabbitmq_url,
            "INGRESS_QUEUE": queue,
            "INGRESS_MODE": "rabbitmq",
            "RETRY_BASE_S": "0",
            "TASKRELAY_TASK_MODULES": "tests.fixture_tasks",
            **extra,
        }
    )


@contextmanager
def running_bridge(settings: Settings, connection: redis.Redis | None = None) -> Iterator[Bridge]:
    own = connection is None
    bridge = Bridge(settings, connection or connect(settings.redis_url, socket_timeout_s=5))
    thread = threading.Thread(target=bridge.run, daemon=True)
    thread.start()
    try:
        yield bridge
    finally:
        bridge.stop()
        thread.join(timeout=15)
        if own:  # its sockets would otherwise be found unclosed by a later test's garbage collection
            bridge.connection.close()
        assert not thread.is_alive(), "bridge did not stop"


def drain(connection: redis.Redis) -> None:
    SimpleWorker(all_queues(connection), connection=connection, serializer=SERIALIZER).work(
        burst=True, logging_level="WARNING"
    )


def publish_raw(rabbitmq_url: str, queue: str, bodies: list[bytes], priority: str = "normal") -> None:
    publisher = Publisher(rabbitmq_url, Topology(queue))
    try:
        for n, body in enumerate(bodies):
            publisher.publish(body, priority, message_id=f"raw-{n}")
    finally:
        publisher.close()


def envelope(task_id: str, task_type: str = "test_count", priority: str = "normal") -> bytes:
    request = TaskRequest(task_id, task_type, priority, {}, submitted_at="2026-01-01T00:00:00+00:00")
    return TaskEnvelope.from_request(request).encode()


def test_publish_bridge_worker_success(redis_url, rabbitmq_url, ingress_queue, real_redis, make_client):
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    client = make_client(settings, real_redis)
    answer = client.post("/api/tasks", json=SEED_TASK)
    assert answer.status_code == 202
    assert answer.json["queue"] == "high_priority"
    task_id = answer.json["task_id"]

    # Accepted, still in RabbitMQ: PENDING at once, listed as reserved, and no RQ job yet.
    before = client.get(f"/api/tasks/{task_id}").json
    assert before["state"] == "PENDING" and before["status"]["status"] == "accepted"
    reserved = client.get("/api/tasks?type=reserved").json
    assert [t["task_id"] for t in reserved["tasks"]] == [task_id]
    assert real_redis.exists(f"rq:job:{task_id}") == 0
    assert client.get("/api/tasks/never-submitted").status_code == 404

    with running_bridge(settings) as bridge:
        wait_until(lambda: real_redis.exists(f"rq:job:{task_id}") == 1, what="the bridge to enqueue")
        wait_until(lambda: bridge.counters.batches >= 1, what="the ack")
    assert real_redis.keys("taskrelay:ingress:*") == []
    queued = client.get(f"/api/tasks/{task_id}").json
    assert queued["state"] == "PENDING" and queued["status"]["status"] == "queued"
    drain(real_redis)
    done = client.get(f"/api/tasks/{task_id}").json
    assert done["state"] == "SUCCESS"
    assert done["status"]["result"]["data"] == {"data": "example data"}


def test_redelivered_message_creates_no_second_job(redis_url, rabbitmq_url, ingress_queue, real_redis):
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    publish_raw(rabbitmq_url, ingress_queue, [envelope("dup-1"), envelope("dup-1"), envelope("dup-2")])
    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.moved + bridge.counters.duplicates == 3, what="three messages")
        assert bridge.counters.moved == 2
        assert bridge.counters.duplicates == 1
    assert real_redis.llen("rq:queue:normal_priority") == 2
    drain(real_redis)
    assert real_redis.get("runs:total") == b"2"
    assert real_redis.get("runs:dup-1") == b"1"


def test_poison_messages_go_to_the_dead_letter_queue(redis_url, rabbitmq_url, ingress_queue, real_redis):
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    good = envelope("after-poison")
    wrong_version = json.dumps({**json.loads(good), "version": 99}).encode()
    missing = json.dumps({"version": 1, "task_id": "x"}).encode()
    poison = [b"\xff not json", wrong_version, envelope("unknown", task_type="no_such_type"), missing, b"[1, 2]"]
    publish_raw(rabbitmq_url, ingress_queue, [*poison, good])
    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.moved == 1, what="the good message")
        assert bridge.counters.poisoned == len(poison)
    assert real_redis.exists("rq:job:after-poison") == 1

    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    reasons = {}
    while True:
        method, properties, body = channel.basic_get(f"{ingress_queue}.dead", auto_ack=True)
        if method is None:
            break
        reasons[body] = properties.headers[REASON_HEADER]
    connection.close()
    assert set(reasons) == set(poison)
    assert "not JSON" in reasons[poison[0]]
    assert "version 99" in reasons[wrong_version]
    assert "unknown task_type 'no_such_type'" in reasons[poison[2]]
    assert "missing fields" in reasons[missing]
    assert "not a JSON object" in reasons[b"[1, 2]"]


def queue_depth(rabbitmq_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        return int(connection.channel().queue_declare(queue, passive=True).method.message_count)
    finally:
        connection.close()


def test_concurrent_submits_share_publishes_and_every_task_arrives_once(
    redis_url, rabbitmq_url, ingress_queue, real_redis
):
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    app = create_app(settings, real_redis)
    ids, flushes = submit_concurrently(app, SEED_TASK)
    app.extensions["taskrelay"].ingress.close()
    assert len(set(ids)) == 120
    assert sum(flushes) == 120 and len(flushes) < 120  # requests that met went out in shared publishes
    assert queue_depth(rabbitmq_url, ingress_queue) == 120
    assert real_redis.zcard("taskrelay:ingress:high_priority") == 120  # every one PENDING before its 202


def test_api_publisher_reconnects_after_its_connection_dropped(
    redis_url, rabbitmq_url, ingress_queue, real_redis, make_client
):
    proxy = TcpProxy("127.0.0.1", 5672)
    try:
        via_proxy = rabbitmq_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
        client = make_client(settings_for(redis_url, via_proxy, ingress_queue), real_redis)
        assert client.post("/api/tasks", json=SEED_TASK).status_code == 202
        proxy.drop_all()
        assert client.post("/api/tasks", json=SEED_TASK).status_code == 202
        assert proxy.accepted == 2
        assert queue_depth(rabbitmq_url, ingress_queue) == 2
    finally:
        proxy.close()


def test_an_ingress_queue_from_before_x_queue_version_is_used_as_it_is(
    redis_url, rabbitmq_url, ingress_queue, real_redis, make_client
):
    legacy = Topology(ingress_queue).legacy()
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    legacy.declare(connection.channel())  # as an earlier Taskrelay left it: RabbitMQ refuses the new x-args on it
    connection.close()
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    client = make_client(settings, real_redis)
    answer = client.post("/api/tasks", json=SEED_TASK)
    assert answer.status_code == 202, answer.json
    with running_bridge(settings) as bridge:
        wait_until(lambda: real_redis.exists(f"rq:job:{answer.json['task_id']}") == 1, what="the bridge to enqueue")
        assert bridge.counters.reconnects == 0


def test_a_batch_goes_out_in_one_send_intact_and_in_order(rabbitmq_url, ingress_queue, monkeypatch):
    publisher = Publisher(rabbitmq_url, Topology(ingress_queue))
    try:
        publisher.publish(envelope("first"), "normal", "first")  # connects and declares
        sent: list[int] = []
        real_send = socket.socket.send

        def counting_send(sock: socket.socket, data: bytes, *flags: int) -> int:
            sent.append(len(data))
            return real_send(sock, data, *flags)

        monkeypatch.setattr(socket.socket, "send", counting_send)
        ids = [f"batch-{n}" for n in range(20)]
        assert publisher.publish_many([Outgoing(envelope(i), "normal", i) for i in ids]) == [None] * 20
        monkeypatch.undo()
        assert 1 <= len(sent) <= 2  # 60 frames (method, header, body each); pika alone would send() each
    finally:
        publisher.close()
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        received = []
        while (got := channel.basic_get(ingress_queue, auto_ack=True))[0] is not None:
            received.append((got[1].message_id, TaskEnvelope.decode(got[2]).task_id))
    finally:
        connection.close()
    assert received == [("first", "first")] + [(i, i) for i in ids]


def test_an_unroutable_message_is_refused_not_confirmed(rabbitmq_url, ingress_queue, monkeypatch):
    """RabbitMQ returns a message no queue takes. The publisher declares the ingress again and retries once;
    still unroutable, it is refused (a 503), never counted as confirmed."""
    publisher = Publisher(rabbitmq_url, Topology(ingress_queue))
    try:
        publisher.publish(envelope("routed"), "normal", "routed")
        # From now on, (re)declaring leaves out the ingress queue and its binding: the exchange routes nowhere.
        exchanges_only = [d for d in Topology(ingress_queue).declarations() if d[1].get("queue") != ingress_queue]
        monkeypatch.setattr(Topology, "declarations", lambda self: exchanges_only)
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        connection.channel().queue_delete(ingress_queue)
        connection.close()
        with pytest.raises(IngressUnavailable, match="could not route"):
            publisher.publish(envelope("lost"), "normal", "lost")
    finally:
        publisher.close()


def test_dual_queues_in_rq_at_once_and_the_bridge_only_takes_the_mark(
    redis_url, rabbitmq_url, ingress_queue, real_redis, make_client
):
    """INGRESS_MODE=dual (the default): the job is queued before the 202, its message is confirmed in RabbitMQ,
    and the bridge, finding the API's mark, creates nothing: the task runs once."""
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue, INGRESS_MODE="dual")
    client = make_client(settings, real_redis)
    task = {"task_type": "test_count", "parameters": {}}
    ids = [client.post("/api/tasks", json=task).json["task_id"] for _ in range(5)]
    assert real_redis.lrange("rq:queue:normal_priority", 0, -1) == [i.encode() for i in ids]  # no bridge yet
    assert client.get(f"/api/tasks/{ids[0]}").json["status"]["status"] == "queued"
    assert ingress_depth(rabbitmq_url, ingress_queue) == 5
    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.in_redis == 5, what="the bridge to take the marks")
        assert (bridge.counters.moved, bridge.counters.duplicates) == (0, 0)
    assert real_redis.keys("taskrelay:ingress:*") == []
    assert ingress_depth(rabbitmq_url, ingress_queue) == 0
    drain(real_redis)
    assert [int(real_redis.get(f"runs:{i}") or 0) for i in ids] == [1] * 5


def test_a_message_that_came_while_the_bridge_slept_is_handed_over_without_waiting_for_more(
    rabbitmq_url, ingress_queue
):
    """The bridge sleeps between batches (after marked ones, or backing off from Redis): what RabbitMQ delivered
    meanwhile is taken at once, not after an idle poll (which waited IDLE_POLL_S for news that would not come, the
    prefetch window being full: a dual-mode backlog drained ~4x slower)."""
    consumer = Consumer(rabbitmq_url, Topology(ingress_queue), prefetch=10)
    consumer.connect()
    try:
        batches = consumer.batches(10, 0.01, lambda: False)
        publish_raw(rabbitmq_url, ingress_queue, [envelope("first")])
        consumer.ack_through(next(batches)[-1].tag)
        publish_raw(rabbitmq_url, ingress_queue, [envelope("second")])
        while consumer.depth():  # until RabbitMQ has delivered it; its frame comes before the answer that says so
            consumer.sleep(0.01)
        consumer.sleep(0)  # what the bridge's sleep does: the delivery goes into the batch buffer
        connection = consumer._connection
        assert connection is not None
        limits: list[float | None] = []
        poll = connection.process_data_events

        def recorded(time_limit: float | None = 0) -> None:
            limits.append(time_limit)
            poll(time_limit=time_limit)

        connection.process_data_events = recorded
        second = next(batches)
        assert [json.loads(d.body)["task_id"] for d in second] == ["second"]
        assert limits[0] == 0
    finally:
        consumer.close()


def test_dual_with_rabbitmq_down_answers_202_from_redis(redis_url, real_redis, make_client):
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    client = make_client(settings_for(redis_url, dead, "taskrelay.unused", INGRESS_MODE="dual"), real_redis)
    answer = client.post("/api/tasks", json=SEED_TASK)
    assert answer.status_code == 202, answer.json
    assert real_redis.lrange("rq:queue:high_priority", 0, -1) == [answer.json["task_id"].encode()]
    assert real_redis.keys("taskrelay:ingress:*") == []  # its mark went with the failed publish
    steps = [{"id": "a", "task_type": "data_processing", "parameters": {"data": [1]}}]
    flow = client.post("/api/workflows", json={"steps": steps})  # a workflow too: created in Redis by the API
    assert flow.status_code == 202, flow.json
    assert real_redis.lrange("rq:queue:normal_priority", 0, -1) == [flow.json["steps"]["a"]["task_id"].encode()]


def test_rabbitmq_down_is_503_and_nothing_half_accepted(redis_url, real_redis, make_client):
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    client = make_client(settings_for(redis_url, dead, "taskrelay.unused"), real_redis)
    answer = client.post("/api/tasks", json=SEED_TASK)
    assert answer.status_code == 503
    assert answer.json["error"] == "service_unavailable"
    assert "RabbitMQ" in answer.json["message"]
    assert [k for k in real_redis.keys("*") if not k.startswith(b"taskrelay:apikeys")] == []


def test_high_priority_overtakes_a_low_backlog(redis_url, rabbitmq_url, ingress_queue, real_redis):
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue, BRIDGE_BATCH_SIZE="50")
    publish_raw(rabbitmq_url, ingress_queue, [envelope(f"low-{n}", priority="low") for n in range(400)], "low")
    publish_raw(rabbitmq_url, ingress_queue, [envelope("urgent", priority="high")], "high")
    with running_bridge(settings):
        wait_until(lambda: real_redis.llen("rq:queue:low_priority") == 400, what="the whole backlog")
    urgent = Job.fetch("urgent", connection=real_redis, serializer=SERIALIZER)
    lows = Job.fetch_many([f"low-{n}" for n in range(400)], connection=real_redis, serializer=SERIALIZER)
    assert urgent.enqueued_at is not None
    ahead = [job for job in lows if job is not None and job.enqueued_at and job.enqueued_at < urgent.enqueued_at]
    assert len(ahead) <= 50  # at most the one batch the bridge had already prefetched
    assert AMQP_PRIORITY["high"] > AMQP_PRIORITY["low"]


def test_dropped_connection_is_reestablished(redis_url, rabbitmq_url, ingress_queue, real_redis):
    proxy = TcpProxy("127.0.0.1", 5672)
    try:
        via_proxy = rabbitmq_url.replace("127.0.0.1:5672", f"127.0.0.1:{proxy.port}")
        settings = settings_for(redis_url, via_proxy, ingress_queue)
        with running_bridge(settings) as bridge:
            publish_raw(rabbitmq_url, ingress_queue, [envelope("before-drop")])
            wait_until(lambda: real_redis.exists("rq:job:before-drop") == 1, what="the first task")
            proxy.drop_all()
            wait_until(lambda: bridge.counters.reconnects >= 1, what="the bridge to notice")
            publish_raw(rabbitmq_url, ingress_queue, [envelope("after-drop")])
            wait_until(lambda: real_redis.exists("rq:job:after-drop") == 1, what="the task after the drop")
        assert proxy.accepted >= 2
    finally:
        proxy.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rabbitmq", "dual"])
def test_redis_outage_loses_nothing(rabbitmq_url, ingress_queue, make_client, mode):
    require_tool("redis-server", "the test stops and restarts a Redis of its own")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings = settings_for(url, rabbitmq_url, ingress_queue, INGRESS_MODE=mode)
    connection = connect(url, socket_timeout_s=2)
    client = make_client(settings, connection)
    with private_redis(port), running_bridge(settings) as bridge:
        first = client.post("/api/tasks", json=SEED_TASK).json["task_id"]
        wait_until(lambda: connection.exists(f"rq:job:{first}") == 1, what="the first task")
        wait_until(lambda: bridge.counters.batches == 1, what="the bridge to ack it")  # dual: the API queued it
    # Redis is down: the API still accepts (tasks wait in RabbitMQ), the bridge holds them.
    with running_bridge(settings) as bridge:
        during = [client.post("/api/tasks", json=SEED_TASK) for _ in range(20)]
        assert [r.status_code for r in during] == [202] * 20
        wait_until(lambda: bridge.counters.redis_waits >= 1, what="the bridge to wait for Redis")
        with private_redis(port):
            ids = [r.json["task_id"] for r in during]
            wait_until(lambda: sum(connection.exists(f"rq:job:{i}") for i in ids) == 20, what="the catch-up")
            # The bridge counts a batch after its transaction returns: wait for the count, not just the jobs.
            wait_until(lambda: bridge.counters.moved == 20, what="the bridge to count the catch-up")
            assert bridge.counters.duplicates == 0


@pytest.mark.slow
def test_redis_first_enqueues_itself_and_publishes_only_while_redis_is_down(rabbitmq_url, ingress_queue, make_client):
    """INGRESS_MODE=redis-first: jobs appear with the 202 and RabbitMQ stays empty; with Redis down the API
    still answers 202, the tasks wait in RabbitMQ, and the bridge moves every one in once Redis is back."""
    require_tool("redis-server", "the test stops and restarts a Redis of its own")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings = settings_for(url, rabbitmq_url, ingress_queue, INGRESS_MODE="redis-first")
    connection = connect(url, socket_timeout_s=2)
    client = make_client(settings, connection)
    with private_redis(port):
        first = client.post("/api/tasks", json=SEED_TASK)
        assert first.status_code == 202
        assert connection.exists(f"rq:job:{first.json['task_id']}") == 1  # no bridge running: the API queued it
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
            ingress_depth(rabbitmq_url, ingress_queue)  # nothing was ever published: not even declared yet
    during = [client.post("/api/tasks", json=SEED_TASK) for _ in range(10)]
    assert [r.status_code for r in during] == [202] * 10
    assert ingress_depth(rabbitmq_url, ingress_queue) == 10
    with private_redis(port), running_bridge(settings) as bridge:
        ids = [r.json["task_id"] for r in during]
        wait_until(lambda: bridge.counters.moved == 10, what="the bridge to move what waited in RabbitMQ")
        assert sum(connection.exists(f"rq:job:{i}") for i in ids) == 10
        assert bridge.counters.duplicates == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["rabbitmq", "redis-first"])
def test_a_full_redis_holds_accepted_tasks_in_rabbitmq_until_it_has_room(
    rabbitmq_url, ingress_queue, make_client, mode
):
    """Redis at its maxmemory (noeviction) refuses writes: the API still answers 202 (the tasks wait in
    RabbitMQ), the bridge holds its batch and retries instead of dying, and moves every task once there is room."""
    require_tool("redis-server", "the test fills a Redis of its own")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings = settings_for(url, rabbitmq_url, ingress_queue, INGRESS_MODE=mode)
    connection = connect(url, socket_timeout_s=2)
    client = make_client(settings, connection)
    with private_redis(port), running_bridge(settings) as bridge:
        with redis_full(port):
            answers = [client.post("/api/tasks", json=SEED_TASK) for _ in range(5)]
            assert [r.status_code for r in answers] == [202] * 5
            wait_until(lambda: bridge.counters.redis_waits >= 2, what="the bridge to wait for room")
            ids = [r.json["task_id"] for r in answers]
            assert bridge.counters.moved == 0
            assert sum(connection.exists(f"rq:job:{i}") for i in ids) == 0
        wait_until(lambda: bridge.counters.moved == 5, what="the bridge to move the tasks once Redis had room")
        assert sum(connection.exists(f"rq:job:{i}") for i in ids) == 5
        assert bridge.counters.duplicates == 0


def test_a_deleted_ingress_queue_is_declared_again_by_the_api_and_the_bridge(
    redis_url, rabbitmq_url, ingress_queue, real_redis, make_client
):
    """An operator deletes the ingress queue: the API's next publish comes back unroutable, so it declares the
    queue again and publishes once more (a 202, not a 503 until restarted); RabbitMQ cancels the bridge's
    consumer, so it reconnects and consumes the new queue (instead of idling forever)."""
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    client = make_client(settings, real_redis)

    def delete_the_queue() -> None:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
        connection.channel().queue_delete(ingress_queue)
        connection.close()

    assert client.post("/api/tasks", json=SEED_TASK).status_code == 202  # the API declared the queue
    delete_the_queue()  # with the task in it
    answers = [client.post("/api/tasks", json=SEED_TASK) for _ in range(2)]
    assert [a.status_code for a in answers] == [202] * 2, answers[0].json
    assert ingress_depth(rabbitmq_url, ingress_queue) == 2
    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.moved == 2, what="the bridge to move the tasks")
        delete_the_queue()
        wait_until(lambda: bridge.counters.reconnects >= 1, what="the bridge to notice its consumer was canceled")
        answers.append(client.post("/api/tasks", json=SEED_TASK))
        assert answers[-1].status_code == 202
        wait_until(lambda: bridge.counters.moved == 3, what="the bridge to move a task from the new queue")
    assert sum(real_redis.exists(f"rq:job:{a.json['task_id']}") for a in answers) == 3


@pytest.mark.slow
def test_bridge_killed_twice_mid_stream_loses_and_duplicates_nothing(
    redis_url, rabbitmq_url, ingress_queue, real_redis
):
    total = 3000
    publish_raw(rabbitmq_url, ingress_queue, [envelope(f"t-{n}") for n in range(total)])

    def jobs_in_redis() -> int:
        return int(real_redis.llen("rq:queue:normal_priority"))

    env = bridge_env(redis_url, rabbitmq_url, ingress_queue, batch_size=100)
    run_killing_the_bridge(env, jobs_in_redis, kills_at=(800, 1800), done=lambda: jobs_in_redis() >= total)
    ids = [i.decode() for i in real_redis.lrange("rq:queue:normal_priority", 0, -1)]
    assert len(ids) == total
    assert len(set(ids)) == total
    drain(real_redis)
    assert real_redis.get("runs:total") == str(total).encode()
    assert all(v == b"1" for v in real_redis.mget([f"runs:t-{n}" for n in range(total)]))


CHAIN = {
    "name": "via-rabbitmq",
    "steps": [
        {"id": "source", "task_type": "test_echo", "parameters": {"rows": [1, 2, 3]}},
        {
            "id": "total",
            "task_type": "test_sum",
            "parameters": {"values": {"$from": "source", "path": "/echo/rows"}},
            "depends_on": ["source"],
        },
    ],
}


def ingress_depth(rabbitmq_url: str, queue: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        return connection.channel().queue_declare(queue=queue, passive=True).method.message_count
    finally:
        connection.close()


def test_a_workflow_travels_as_one_message_and_reads_pending_until_bridged(
    redis_url, rabbitmq_url, ingress_queue, real_redis, make_client
):
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    client = make_client(settings, real_redis)
    answer = client.post("/api/workflows", json=CHAIN)
    assert answer.status_code == 202, answer.json
    workflow_id = answer.json["workflow_id"]
    assert ingress_depth(rabbitmq_url, ingress_queue) == 1
    assert real_redis.keys("rq:job:*") == []
    pending = client.get(f"/api/workflows/{workflow_id}").json
    assert pending["state"] == "PENDING"
    assert {entry["status"] for entry in pending["steps"].values()} == {"accepted"}
    assert [w["workflow_id"] for w in client.get("/api/workflows").json["workflows"]] == [workflow_id]

    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.workflows == 1 and bridge.counters.batches >= 1, what="the bridge")
    assert real_redis.keys("taskrelay:workflow-accepted:*") == []
    drain(real_redis)
    done = client.get(f"/api/workflows/{workflow_id}").json
    assert done["state"] == "SUCCESS", done
    assert done["steps"]["total"]["result"] == {"sum": 6, "count": 3}


def test_a_workflow_canceled_in_the_ingress_creates_no_step(
    redis_url, rabbitmq_url, ingress_queue, real_redis, make_client
):
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    client = make_client(settings, real_redis)
    workflow_id = client.post("/api/workflows", json=CHAIN).json["workflow_id"]
    canceled = client.post(f"/api/workflows/{workflow_id}/cancel")
    assert canceled.status_code == 200 and canceled.json["state"] == "REVOKED", canceled.json
    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.batches >= 1, what="the bridge")
    assert real_redis.keys("rq:job:*") == []
    status = client.get(f"/api/workflows/{workflow_id}").json
    assert status["state"] == "REVOKED"
    assert {entry["state"] for entry in status["steps"].values()} == {"REVOKED"}


def workflow_message(workflow_id: str) -> bytes:
    from bridge.message import WorkflowEnvelope
    from core.workflow import Plan, StepJob

    def step(step_id: str, parents: tuple[str, ...] = ()) -> StepJob:
        request = TaskRequest(f"{workflow_id}-{step_id}", "test_count", "normal", {}, "2026-01-01T00:00:00+00:00")
        return StepJob(step_id, request, tuple(f"{workflow_id}-{p}" for p in parents))

    steps = (step("a"), step("b", ("a",)), step("c", ("a",)))
    document = {
        "workflow_id": workflow_id,
        "name": None,
        "created_at": "2026-01-01T00:00:00+00:00",
        "steps": {s.step_id: {"task_id": s.request.task_id, "depends_on": [], "allow_failure": []} for s in steps},
    }
    return WorkflowEnvelope(Plan(workflow_id, document, steps)).encode()


def test_a_redelivered_workflow_creates_no_second_step(redis_url, rabbitmq_url, ingress_queue, real_redis):
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    publish_raw(rabbitmq_url, ingress_queue, [workflow_message("w1"), workflow_message("w1"), envelope("t1")])
    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.workflows + bridge.counters.duplicates + bridge.counters.moved == 3)
        assert (bridge.counters.workflows, bridge.counters.duplicates, bridge.counters.moved) == (1, 1, 1)
    assert sorted(real_redis.lrange("rq:queue:normal_priority", 0, -1)) == [b"t1", b"w1-a"]
    assert real_redis.zcard("rq:deferred:normal_priority") == 2
    drain(real_redis)
    assert real_redis.get("runs:total") == b"4"


@pytest.mark.slow
def test_bridge_killed_mid_stream_of_workflows_duplicates_no_step(redis_url, rabbitmq_url, ingress_queue, real_redis):
    total = 300
    publish_raw(rabbitmq_url, ingress_queue, [workflow_message(f"w{n}") for n in range(total)])

    def created() -> int:
        return len(real_redis.keys("taskrelay:workflow:*"))

    env = bridge_env(redis_url, rabbitmq_url, ingress_queue, batch_size=20)
    done = lambda: ingress_depth(rabbitmq_url, ingress_queue) == 0 and created() == total  # noqa: E731
    run_killing_the_bridge(env, created, kills_at=(80, 180), done=done)
    roots = [i.decode() for i in real_redis.lrange("rq:queue:normal_priority", 0, -1)]
    assert sorted(roots) == sorted(f"w{n}-a" for n in range(total))
    assert real_redis.zcard("rq:deferred:normal_priority") == 2 * total
    for n in (0, total // 2, total - 1):
        assert real_redis.smembers(f"rq:job:w{n}-a:dependents") == {f"w{n}-b".encode(), f"w{n}-c".encode()}


def test_an_idempotent_replay_publishes_nothing(redis_url, rabbitmq_url, ingress_queue, real_redis, make_client):
    client = make_client(settings_for(redis_url, rabbitmq_url, ingress_queue), real_redis)
    headers = {"Idempotency-Key": "once-only"}
    first = client.post("/api/tasks", json=SEED_TASK, headers=headers)
    again = client.post("/api/tasks", json=SEED_TASK, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true" and again.json["task_id"] == first.json["task_id"]
    workflow = client.post("/api/workflows", json=CHAIN, headers={"Idempotency-Key": "flow-once"})
    replayed = client.post("/api/workflows", json=CHAIN, headers={"Idempotency-Key": "flow-once"})
    assert replayed.json["workflow_id"] == workflow.json["workflow_id"]
    assert ingress_depth(rabbitmq_url, ingress_queue) == 2


def test_a_retry_that_takes_over_a_dead_requests_key_publishes_the_same_task_which_runs_once(
    redis_url, rabbitmq_url, ingress_queue, real_redis, make_client, monkeypatch
):
    """The first request published its task and died before storing its answer: after the lease, the retry
    publishes the task again with the same id; the bridge creates it once and nothing stays PENDING."""
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    client = make_client(settings, real_redis)
    headers = {"Idempotency-Key": "died-after-publishing"}

    def dies(*_args: object, **_kwargs: object) -> None:
        raise SystemExit("the API process died before storing the answer")

    with monkeypatch.context() as patch:
        patch.setattr(idempotency, "finish", dies)
        with pytest.raises(SystemExit):
            client.post("/api/tasks", json=SEED_TASK, headers=headers)
    assert ingress_depth(rabbitmq_url, ingress_queue) == 1
    assert client.post("/api/tasks", json=SEED_TASK, headers=headers).status_code == 409
    (record,) = real_redis.keys("taskrelay:idempotency:*")
    real_redis.pexpire(record, (idempotency.IN_FLIGHT_TTL_S - idempotency.LEASE_S) * 1000)  # the lease ran out
    retry = client.post("/api/tasks", json=SEED_TASK, headers=headers)
    assert retry.status_code == 202
    task_id = retry.json["task_id"]
    assert ingress_depth(rabbitmq_url, ingress_queue) == 2  # both attempts published: the same id
    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.moved + bridge.counters.duplicates == 2, what="both messages")
    assert (bridge.counters.moved, bridge.counters.duplicates) == (1, 1)
    assert real_redis.lrange("rq:queue:high_priority", 0, -1) == [task_id.encode()]
    assert real_redis.keys("taskrelay:ingress:*") == []  # no accepted record left to read PENDING
    drain(real_redis)
    assert client.get(f"/api/tasks/{task_id}").json["state"] == "SUCCESS"


def bridge_env(redis_url: str, rabbitmq_url: str, queue: str, batch_size: int) -> dict[str, str]:
    """The environment of a `python -m bridge` process on this test's Redis db and ingress queue."""
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "RABBITMQ_URL": rabbitmq_url,
        "INGRESS_QUEUE": queue,
        "BRIDGE_BATCH_SIZE": str(batch_size),
        "TASKRELAY_TASK_MODULES": "tests.fixture_tasks",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def run_killing_the_bridge(
    env: dict[str, str], progress: Callable[[], int], kills_at: tuple[int, ...], done: Callable[[], bool]
) -> None:
    """Run bridge processes, SIGKILLing each once `progress()` reaches the next of `kills_at`; then run one until
    `done()`, give a late redelivery time to show (a duplicate would), and stop it with SIGTERM."""
    for kill_after in kills_at:
        bridge = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=ROOT, env=env)
        try:
            wait_until(lambda: progress() >= kill_after, timeout=60, what=f"{kill_after} written")  # noqa: B023
        finally:
            bridge.send_signal(signal.SIGKILL)
            bridge.wait()
    bridge = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=ROOT, env=env)
    try:
        wait_until(done, timeout=60, what="everything written")
        time.sleep(0.5)  # let any late redelivery land, so a duplicate would show
    finally:
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(timeout=20) == 0
