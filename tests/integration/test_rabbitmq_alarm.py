"""RabbitMQ pushing back: a memory alarm (it blocks publishing connections) gets a 503 at once with nothing sent;
a queue at its length limit (reject-publish) gets a 503 that says so.

It runs its own RabbitMQ node (bench.chaos.OwnRabbit), whose alarm and policies it sets with rabbitmqctl: the
machine's RabbitMQ is left alone.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest

from app import create_app
from bench.chaos import OwnRabbit
from tests.conftest import require_tool
from tests.helpers import keyed_settings, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq, pytest.mark.slow]

TASK = {"task_type": "data_processing", "priority": "high", "parameters": {"data": "example data"}}
QUEUE = "taskrelay.alarm"


@pytest.fixture(scope="module")
def own_rabbit() -> Iterator[OwnRabbit]:
    require_tool("rabbitmq-server", "the test raises alarms in a RabbitMQ node of its own")
    with tempfile.TemporaryDirectory(prefix="taskrelay-alarm-") as directory:
        os.chmod(directory, 0o755)  # Debian's node runs as the rabbitmq user
        rabbit = OwnRabbit(Path(directory))
        try:
            yield rabbit
        finally:
            rabbit.stop()


def memory_watermark(rabbit: OwnRabbit, fraction: str) -> None:
    """Set the node's memory high watermark: "0" raises the memory alarm at once, "0.4" (the default) ends it."""
    command = ["rabbitmqctl", "-n", rabbit.node, "set_vm_memory_high_watermark", fraction]
    subprocess.run(command, env=rabbit.env, check=True, capture_output=True, timeout=60)


def depth(url: str) -> int:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        return int(connection.channel().queue_declare(queue=QUEUE, passive=True).method.message_count)
    finally:
        connection.close()


def test_a_memory_alarm_gets_a_prompt_503_and_leaves_nothing_behind(own_rabbit, redis_url, real_redis):
    settings = keyed_settings(
        {
            "REDIS_URL": redis_url,
            "RABBITMQ_URL": own_rabbit.url,
            "INGRESS_QUEUE": QUEUE,
            "INGRESS_MODE": "rabbitmq",  # the API publishes only (INGRESS_MODE=dual would answer 202 from Redis)
            "RETRY_BASE_S": "0",
        }
    )
    app = create_app(settings, real_redis)
    client = app.test_client()
    publisher = app.extensions["taskrelay"].ingress.publisher
    try:
        assert client.post("/api/tasks", json=TASK).status_code == 202
        memory_watermark(own_rabbit, "0")

        sent_anyway = 0  # refusals that say their message went out before RabbitMQ's notice came

        def refused_at_once() -> bool:
            nonlocal sent_anyway
            started = time.monotonic()
            answer = client.post("/api/tasks", json=TASK)
            assert answer.status_code == 503, answer.json
            assert answer.headers["Retry-After"]
            assert "blocks publishing" in answer.json["message"]
            if "may still be queued" in answer.json["message"]:
                sent_anyway += 1
                return False
            return time.monotonic() - started < 5.0  # it waited ~20 s before (two confirm timeouts)

        # Once the publisher knows of the alarm, it refuses without sending anything, at once.
        wait_until(refused_at_once, 30, "a refusal that sent nothing")
        for _ in range(3):
            assert refused_at_once()
        ready = client.get("/readyz")  # what an operator sees, at once too
        assert (ready.status_code, ready.json["down"]) == (503, "rabbitmq")
        assert "blocks publishing" in ready.json["message"]
        memory_watermark(own_rabbit, "0.4")
        wait_until(lambda: client.post("/api/tasks", json=TASK).status_code == 202, 30, "a 202 once the alarm ended")
        # Before and after the alarm: one task each; in between, only what was sent before the notice came.
        assert depth(own_rabbit.url) == 2 + sent_anyway
    finally:
        publisher.close()
        app.extensions["taskrelay"].connection.close()


def test_a_queue_at_its_length_limit_gets_a_503_that_says_so(own_rabbit, redis_url, real_redis):
    """An operator's max-length policy with reject-publish: RabbitMQ nacks what does not fit."""
    queue = "taskrelay.limited"
    policy = [
        "rabbitmqctl",
        "-n",
        own_rabbit.node,
        "set_policy",
        "limit",
        f"^{queue}$",
        '{"max-length": 2, "overflow": "reject-publish"}',
    ]
    subprocess.run([*policy, "--apply-to", "queues"], env=own_rabbit.env, check=True, capture_output=True, timeout=60)
    env = {"REDIS_URL": redis_url, "RABBITMQ_URL": own_rabbit.url, "INGRESS_QUEUE": queue}
    app = create_app(keyed_settings({**env, "INGRESS_MODE": "rabbitmq"}), real_redis)
    dual = create_app(keyed_settings({**env, "INGRESS_MODE": "dual"}), real_redis)
    client = app.test_client()
    try:
        answers = [client.post("/api/tasks", json=TASK) for _ in range(3)]
        assert [a.status_code for a in answers] == [202, 202, 503]
        assert answers[2].headers["Retry-After"]
        assert "length limit" in answers[2].json["message"]
        # INGRESS_MODE=dual queued the task in Redis before RabbitMQ refused it: a 202, and no mark left behind.
        answer = dual.test_client().post("/api/tasks", json=TASK)
        assert answer.status_code == 202, answer.json
        assert real_redis.exists(f"rq:job:{answer.json['task_id']}") == 1
        assert real_redis.zscore("taskrelay:ingress:in-redis", answer.json["task_id"]) is None
    finally:
        app.extensions["taskrelay"].ingress.publisher.close()
        dual.extensions["taskrelay"].ingress.publisher.close()
        clear = ["rabbitmqctl", "-n", own_rabbit.node, "clear_policy", "limit"]
        subprocess.run(clear, env=own_rabbit.env, capture_output=True, timeout=60)
