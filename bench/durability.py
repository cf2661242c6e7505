"""What durability costs the bridge: RabbitMQ -> RQ throughput into a Redis with AOF off, everysec and always.

    .venv/bin/python -m bench.durability [--tasks 20000] [--rounds 2] [--smoke]

For each Redis setting, side by side and interleaved round by round: a Redis
of its own on a free port (bench.chaos.OwnRedis; the machine's Redis is not
touched) with that `appendfsync`, TASKS task messages published to a fresh
queue on the machine's RabbitMQ, then `python -m bridge` moving them into RQ,
timed from the first job in Redis to the last. The bridge acks a batch only
after its one MULTI/EXEC returned, so with `appendfsync always` an acked task
is on disk (one fsync per batch). Writes bench/results/durability.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import redis

from bench.chaos import OwnRedis
from bench.procs import ROOT, child_env, save_results, stop_all
from bridge.amqp.publisher import Publisher
from bridge.amqp.topology import Topology, delete_topology
from bridge.message import Outgoing, TaskEnvelope
from core.model import TaskRequest
from core.storage import keys

RABBITMQ_URL = os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
SETTINGS = ("off", "everysec", "always")


def _publish(queue: str, count: int) -> None:
    publisher = Publisher(RABBITMQ_URL, Topology(queue))
    stamp = "2026-01-01T00:00:00+00:00"
    try:
        for start in range(0, count, 500):
            messages = [
                Outgoing(
                    TaskEnvelope.from_request(TaskRequest(f"d-{n}", "bench_noop", "normal", {}, stamp)).encode(),
                    "normal",
                    f"d-{n}",
                )
                for n in range(start, min(count, start + 500))
            ]
            publisher.publish_many(messages)
    finally:
        publisher.close()


def _delete_queue(queue: str) -> None:
    delete_topology(RABBITMQ_URL, Topology(queue))


def _drain(redis_url: str, queue: str, count: int) -> float:
    connection = redis.Redis.from_url(redis_url)
    env = child_env(
        REDIS_URL=redis_url, RABBITMQ_URL=RABBITMQ_URL, INGRESS_QUEUE=queue, TASKRELAY_TASK_MODULES="bench.tasks"
    )
    bridge = subprocess.Popen([sys.executable, "-m", "bridge"], cwd=ROOT, env=env)
    try:
        deadline = time.perf_counter() + 600
        while connection.llen(keys.queue_key("normal_priority")) == 0:
            if time.perf_counter() > deadline:
                raise RuntimeError("the bridge moved nothing within 10 minutes")
            time.sleep(0.002)
        started = time.perf_counter()
        while connection.llen(keys.queue_key("normal_priority")) < count:
            if time.perf_counter() > deadline:
                raise RuntimeError("the bridge did not drain the queue within 10 minutes")
            time.sleep(0.005)
        return time.perf_counter() - started
    finally:
        stop_all([bridge])


def _one(setting: str, count: int, workdir: Path) -> float:
    server = OwnRedis(workdir, "everysec" if setting == "off" else setting)
    if setting == "off":
        redis.Redis.from_url(server.url).config_set("appendonly", "no")
    queue = f"taskrelay.bench.durability.{uuid.uuid4().hex[:8]}"
    try:
        _publish(queue, count)
        return _drain(server.url, queue, count)
    finally:
        server.stop()
        _delete_queue(queue)
        shutil.rmtree(server.dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only proves the harness works")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.rounds = 500, 1
    seconds: dict[str, list[float]] = {setting: [] for setting in SETTINGS}
    for round_number in range(1, args.rounds + 1):
        for setting in SETTINGS:
            workdir = Path(tempfile.mkdtemp(prefix="taskrelay-durability-"))
            try:
                seconds[setting].append(_one(setting, args.tasks, workdir))
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            rate = args.tasks / seconds[setting][-1]
            print(f"round {round_number} appendfsync {setting:8} {rate:8.0f} tasks/s", flush=True)
    rates = {setting: args.tasks * len(runs) / sum(runs) for setting, runs in seconds.items()}
    lines = [
        f"Bridge throughput by Redis durability ({platform.machine()}, {os.cpu_count()} cores; {args.tasks} tasks x"
        f" {args.rounds} rounds per setting, interleaved; one bridge process)",
        "",
        "| Redis AOF | tasks/s into RQ | vs AOF off |",
        "|---|---:|---:|",
    ]
    for setting in SETTINGS:
        label = "off" if setting == "off" else f"appendfsync {setting}"
        lines.append(f"| {label} | {rates[setting]:.0f} | {rates[setting] / rates['off']:.2f}x |")
    lines.append("")
    name = "durability-smoke" if args.smoke else "durability"
    save_results(name, "\n".join(lines), {"rates": rates, "seconds": seconds})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
