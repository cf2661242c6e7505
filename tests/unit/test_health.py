"""GET /healthz (no I/O) and GET /readyz (Redis, and RabbitMQ when configured): open without a key."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from app import create_app
from core.connection import connect
from tests.processes import free_port


@pytest.fixture
def anonymous(app):
    client = app.test_client()
    client.api_key = None
    return client


def test_healthz_is_open_and_asks_nothing_of_redis(app, anonymous, fake_redis, monkeypatch):
    sent: list = []
    monkeypatch.setattr(fake_redis, "execute_command", lambda *args, **kwargs: sent.append(args))
    answer = anonymous.get("/healthz")
    assert answer.status_code == 200 and answer.json == {"status": "ok"}
    assert sent == []


def test_readyz_is_open_and_ready_when_redis_answers(anonymous):
    answer = anonymous.get("/readyz")
    assert answer.status_code == 200
    assert answer.json == {"status": "ready", "redis": "ok", "rabbitmq": "not configured"}


def test_with_redis_down_healthz_is_200_and_readyz_503_names_redis(settings):
    client: Any = create_app(settings, connect(f"redis://127.0.0.1:{free_port()}/0")).test_client()
    client.api_key = None
    assert client.get("/healthz").status_code == 200
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["Retry-After"] == "5"
    body = answer.json
    assert body["status"] == "error" and body["error"] == "not_ready" and body["down"] == "redis"
    assert body["message"].startswith("not ready: Redis is not answering")


def test_with_rabbitmq_down_readyz_503_names_rabbitmq(settings, fake_redis):
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    client: Any = create_app(dataclasses.replace(settings, rabbitmq_url=url), fake_redis).test_client()
    client.api_key = None
    answer = client.get("/readyz")
    assert answer.status_code == 503 and answer.json["down"] == "rabbitmq"
    assert "127.0.0.1" in answer.json["message"] and "guest" not in answer.json["message"]  # no password
    assert answer.headers["Retry-After"] == "5"


def test_readyz_checks_rabbitmq_when_configured(settings, fake_redis):
    class Answering:
        def message_counts(self):
            return {"taskrelay.ingress": 0, "taskrelay.ingress.dead": 0}

        def close(self):
            pass

    app = create_app(dataclasses.replace(settings, rabbitmq_url="amqp://127.0.0.1:1/%2F"), fake_redis)
    app.extensions["taskrelay"].ingress.publisher = Answering()
    answer = app.test_client().get("/readyz")
    assert answer.status_code == 200 and answer.json["rabbitmq"] == "ok"
