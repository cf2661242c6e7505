"""The seed's stack for comparison: Celery 5 with the RabbitMQ broker and the Redis result backend."""

from __future__ import annotations

import os
import signal
import sys

import redis
from celery import Celery

from bench.tasks import burn, sleep_and_mark

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("BENCH_CELERY_BACKEND", "redis://127.0.0.1:6379/13"),
)
app.conf.update(
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "bench.celery"),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "4")),
    task_acks_late=os.environ.get("BENCH_CELERY_ACKS_LATE") == "1",
)

STOP_SIGNAL = signal.SIGQUIT
"""How the benchmarks stop a Celery worker once its part is measured: a cold shutdown. A warm one (SIGTERM)
waits for running tasks and took 3 to 7 s here even idle; unacked messages go back to a queue that is deleted next."""


@app.task(name="bench.noop")
def noop() -> None:
    """Do nothing."""


@app.task(name="bench.cpu")
def cpu() -> int:
    """About 1 ms of CPU."""
    return burn()


@app.task(name="bench.add1")
def add1(x: int) -> int:
    """Return x + 1 (bench.workflows' chain)."""
    return x + 1


@app.task(name="bench.total")
def total(values: list[int]) -> int:
    """Return the sum of values (bench.workflows' chord callback)."""
    return sum(values)


@app.task(name="bench.sleep")
def sleep(seconds: float, name: str) -> None:
    """Mark the start in the result backend's Redis, then sleep (bench.priority)."""
    sleep_and_mark(_backend(), name, seconds)


_connection: list[redis.Redis] = []


def _backend() -> redis.Redis:
    if not _connection:
        _connection.append(redis.Redis.from_url(app.conf.result_backend))
    return _connection[0]


def worker_argv(queue: str, concurrency: int = 2) -> list[str]:
    """Return the command line of the Celery worker the benchmarks run: prefork, 2 processes (or `concurrency`),
    on `queue`."""
    argv = [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-P", "prefork", "-c", str(concurrency)]
    return [*argv, "-Q", queue, "--loglevel", "WARNING", "--without-gossip", "--without-mingle", "--without-heartbeat"]


def delete_queue(queue: str) -> None:
    """Delete a benchmark's Celery queue, messages included."""
    with app.connection_for_write() as connection:
        connection.default_channel.queue_delete(queue)
