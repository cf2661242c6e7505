"""The issue's calibration point, for the benchmarks: Flask publishing each POST with plain pika, a confirm per message.

One BlockingConnection and channel per gunicorn process (as Taskrelay keeps one per
process), guarded by a lock; each request publishes one persistent message to a
durable queue (BENCH_PIKA_QUEUE) and waits for its own confirm before answering 202.
Nothing is recorded in Redis: this is the cost of "publish with confirms" alone.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from typing import Any

import pika
from flask import Flask, jsonify, request

app = Flask(__name__)
QUEUE = os.environ.get("BENCH_PIKA_QUEUE", "bench.pika")
URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PERSISTENT = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, content_type="application/json")
_lock = threading.Lock()
_channel: Any = None


def _open() -> Any:
    channel = pika.BlockingConnection(pika.URLParameters(URL)).channel()
    channel.queue_declare(QUEUE, durable=True)
    channel.confirm_delivery()
    return channel


@app.post("/api/tasks")
def submit() -> Any:
    """Publish the task with a confirm, then answer 202 as Taskrelay does."""
    global _channel
    body = request.get_json()
    task_id = str(uuid.uuid4())
    message = json.dumps({"task_id": task_id, **body}).encode()
    with _lock:
        if _channel is None:
            _channel = _open()
        _channel.basic_publish("", QUEUE, message, PERSISTENT, mandatory=True)
    return jsonify({"task_id": task_id, "status": "submitted", "queue": body.get("priority", "normal")}), 202


def delete_queue(url: str, queue: str) -> None:
    """Delete the baseline's queue, messages included."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()
