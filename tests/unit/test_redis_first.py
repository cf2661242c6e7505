"""INGRESS_MODE=redis-first: tasks go straight into RQ; while Redis does not answer they are published instead."""

from __future__ import annotations

import fakeredis
import pytest

from app.ingress import REDIS_PAUSE_S, DirectIngress, DualIngress, RabbitIngress, RedisFirstIngress, build
from core import accepted
from core.errors import ConfigError
from core.model import TaskRequest
from core.settings import Settings
from core.storage.keys import job_key
from tests.helpers import PipelineCount, Published

RABBIT = {"RABBITMQ_URL": "amqp://guest:guest@127.0.0.1:1/%2F"}


def request(task_id: str) -> TaskRequest:
    return TaskRequest(task_id, "data_processing", "normal", {"data": [1]}, submitted_at="2026-01-01T00:00:00+00:00")


def redis_first(connection: fakeredis.FakeRedis) -> tuple[RedisFirstIngress, Published, list[float]]:
    ingress = RedisFirstIngress(connection, Settings.from_env({**RABBIT, "INGRESS_MODE": "redis-first"}))
    published = Published()
    ingress.rabbit.publisher.publish_many = published  # type: ignore[method-assign]
    now = [100.0]
    ingress.pause.clock = lambda: now[0]
    return ingress, published, now


def test_the_setting_picks_the_ingress_and_redis_first_needs_rabbitmq(fake_redis):
    assert type(build(fake_redis, Settings.from_env(RABBIT))) is DualIngress  # the default with RABBITMQ_URL
    assert type(build(fake_redis, Settings.from_env({**RABBIT, "INGRESS_MODE": "rabbitmq"}))) is RabbitIngress
    chosen = build(fake_redis, Settings.from_env({**RABBIT, "INGRESS_MODE": "Redis-First"}))
    assert type(chosen) is RedisFirstIngress
    with pytest.raises(ConfigError, match="INGRESS_MODE=redis-first needs RABBITMQ_URL"):
        Settings.from_env({"INGRESS_MODE": "redis-first"})
    with pytest.raises(ConfigError, match="INGRESS_MODE=dual needs RABBITMQ_URL"):
        Settings.from_env({"INGRESS_MODE": "dual"})
    assert type(build(fake_redis, Settings.from_env({}))) is DirectIngress  # no RABBITMQ_URL: the default is moot
    with pytest.raises(ConfigError, match="INGRESS_MODE must be one of rabbitmq, redis-first, dual"):
        Settings.from_env({**RABBIT, "INGRESS_MODE": "kafka"})


def test_with_redis_up_a_task_is_queued_in_rq_and_nothing_is_published(fake_redis):
    ingress, published, _ = redis_first(fake_redis)
    ingress.submit(request("up-1"))
    assert fake_redis.lrange("rq:queue:normal_priority", 0, -1) == [b"up-1"]
    assert published.ids == []
    assert accepted.get(fake_redis, "up-1") is None  # no "accepted" record: the job itself is there


def test_with_redis_down_tasks_are_published_and_redis_is_left_alone_for_the_pause():
    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    ingress, published, now = redis_first(connection)
    tries = PipelineCount(connection)
    server.connected = False
    ingress.submit(request("down-1"))  # Redis fails: published instead, and the answer is a 202
    assert published.ids == ["down-1"]
    tried_while_down = tries.count
    now[0] += REDIS_PAUSE_S / 2
    ingress.submit(request("down-2"))
    assert published.ids == ["down-1", "down-2"]
    assert tries.count == tried_while_down  # neither the enqueue nor the accepted record tried Redis again
    server.connected = True
    now[0] += REDIS_PAUSE_S / 2 + 0.01
    ingress.submit(request("back-1"))
    assert published.ids == ["down-1", "down-2"]
    assert connection.exists(job_key("back-1")) == 1
    assert connection.exists(job_key("down-1")) == 0  # the bridge moves those in


def test_through_the_api_a_workflow_falls_back_to_one_message_and_answers_202():
    from app import create_app

    server = fakeredis.FakeServer()
    connection = fakeredis.FakeRedis(server=server)
    app = create_app(Settings.from_env({**RABBIT, "INGRESS_MODE": "redis-first", "TASKRELAY_AUTH": "off"}), connection)
    ingress = app.extensions["taskrelay"].ingress
    published = Published()
    ingress.rabbit.publisher.publish_many = published
    client = app.test_client()
    steps = [{"id": "a", "task_type": "test_echo", "parameters": {}}]
    assert client.post("/api/workflows", json={"steps": steps}).status_code == 202  # Redis up: created in Redis
    assert published.ids == []
    server.connected = False
    answer = client.post("/api/workflows", json={"steps": steps})
    assert answer.status_code == 202, answer.json
    assert published.ids == [answer.json["workflow_id"]]
