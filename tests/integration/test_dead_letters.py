"""Dead letters through the real RabbitMQ and a real bridge: listed with their reasons, left in place, replayed."""

from __future__ import annotations

import logging

import pika
import pytest

from bridge.amqp.consumer import REASON_HEADER
from tests.helpers import wait_until
from tests.integration.test_bridge import drain, envelope, make_client, publish_raw, running_bridge, settings_for

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]
__all__ = ["make_client"]  # the fixture, imported for these tests

STALE_REASON = "unknown task_type 'test_count' (the bridge of an older deploy)"


def dead_letter_directly(rabbitmq_url: str, queue: str, body: bytes, message_id: str) -> None:
    """Put `body` in the dead-letter queue as the bridge would have, with a reason: a message once poison."""
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    properties = pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent, headers={REASON_HEADER: STALE_REASON}, message_id=message_id
    )
    channel.basic_publish(f"{queue}.dlx", "", body, properties)
    connection.close()


def test_dead_letters_are_listed_left_in_place_and_replayed(
    redis_url, rabbitmq_url, ingress_queue, real_redis, make_client, caplog
):
    settings = settings_for(redis_url, rabbitmq_url, ingress_queue)
    client = make_client(settings, real_redis)
    publish_raw(rabbitmq_url, ingress_queue, [b"\xff not json"])  # message id raw-0
    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.poisoned == 1, what="the poison message to be dead-lettered")
    dead_letter_directly(rabbitmq_url, ingress_queue, envelope("revived", priority="high"), "revived")

    def listed(limit: int) -> dict:
        answer = client.get(f"/api/ingress/dead-letters?limit={limit}")
        assert answer.status_code == 200, answer.json
        return answer.json

    assert wait_until(lambda: listed(10)["count"] == 2, what="both dead letters to be counted")
    one = listed(1)
    assert one["count"] == 2 and len(one["messages"]) == 1
    messages = {m["task_id"]: m for m in listed(10)["messages"]}
    assert set(messages) == {"raw-0", "revived"}
    assert "not JSON" in messages["raw-0"]["reason"] and messages["raw-0"]["body"].endswith(" not json")
    assert messages["revived"]["reason"] == STALE_REASON and '"task_id":"revived"' in messages["revived"]["body"]
    assert listed(10)["count"] == 2  # reading takes nothing away

    with caplog.at_level(logging.INFO, logger="taskrelay.audit"):
        answer = client.post("/api/ingress/dead-letters/replay")
    assert answer.status_code == 200 and answer.json == {"replayed": 2}
    assert any(r.getMessage().startswith("replay the dead letters by key") for r in caplog.records)
    with running_bridge(settings) as bridge:
        wait_until(lambda: bridge.counters.moved == 1 and bridge.counters.poisoned == 1, what="the replayed two")
    drain(real_redis)
    assert client.get("/api/tasks/revived").json["state"] == "SUCCESS"
    still = listed(10)  # the poison one is dead again, with its reason; the revived one is not
    assert still["count"] == 1 and still["messages"][0]["task_id"] == "raw-0"
    assert "not JSON" in still["messages"][0]["reason"]


def test_no_dead_letter_queue_yet_is_an_empty_list(redis_url, rabbitmq_url, ingress_queue, real_redis, make_client):
    client = make_client(settings_for(redis_url, rabbitmq_url, ingress_queue), real_redis)
    assert client.get("/api/ingress/dead-letters").json == {"count": 0, "messages": []}
    assert client.post("/api/ingress/dead-letters/replay").json == {"replayed": 0}
