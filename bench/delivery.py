"""Check delivery end to end under faults: no task lost, none run twice.

    .venv/bin/python -m bench.delivery [--tasks 10000] [--redis-outage-tasks 2000]

Runs the real pipeline — gunicorn API -> RabbitMQ -> bridge -> RQ -> workers —
against the real RabbitMQ and a private redis-server (append-only file on, so
it can be stopped and restarted without losing what it holds), in two scenarios:
  kill    TASKS tasks over HTTP while the bridge is SIGKILLed twice and restarted
  outage  tasks over HTTP while Redis is stopped for 10 s, then restarted
Afterwards every submitted id must be a finished job that ran exactly once
(meta attempts == 1). This is a check with a verdict, not a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import redis

from bench.ingress import RABBITMQ_URL, free_port, start_api
from bench.procs import KEY_HEADER_LINE
from core.storage import keys

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"task_type": "data_processing", "priority": "normal", "parameters": {"data": [1, 2, 3]}}).encode()


async def _submit(port: int, count: int, concurrency: int, ids: list[str], errors: list[str]) -> None:
    remaining = [count]

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        request = (
            f"POST /api/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{KEY_HEADER_LINE}"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        while remaining[0] > 0:
            remaining[0] -= 1
            writer.write(request)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = json.loads(await reader.readexactly(length))
            if status == 202:
                ids.append(body["task_id"])
            else:
                errors.append(f"{status}: {body.get('message')}")
        writer.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))


def submit(port: int, count: int, concurrency: int = 8) -> tuple[list[str], list[str]]:
    """POST `count` tasks; return (accepted ids, error answers)."""
    ids: list[str] = []
    errors: list[str] = []
    asyncio.run(_submit(port, count, concurrency, ids, errors))
    return ids, errors


class Cluster:
    """A private redis-server, an API, a bridge and workers, each restartable."""

    def __init__(self, workers: int) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="taskrelay-delivery-")
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.queue = f"taskrelay.delivery.{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "RABBITMQ_URL": RABBITMQ_URL,
            "INGRESS_QUEUE": self.queue,
            "WORKER_CLASS": "simple",
            "LOG_LEVEL": "WARNING",
        }
        self.redis: subprocess.Popen | None = None
        self.start_redis()
        self.api, self.api_port = start_api("app:create_app()", self.env)
        self.bridge = self._spawn("bridge")
        self.workers = [self._spawn("jobs.worker") for _ in range(workers)]
        self.connection = redis.Redis.from_url(self.redis_url)

    def _spawn(self, module: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=self.env)

    def start_redis(self) -> None:
        argv = ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--dir", self.data_dir]
        self.redis = subprocess.Popen([*argv, "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.redis_port, socket_connect_timeout=0.2).ping():
                    return
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop_redis(self) -> None:
        assert self.redis is not None
        self.redis.terminate()  # SIGTERM: the append-only file is flushed
        self.redis.wait()

    def kill_bridge(self) -> None:
        self.bridge.send_signal(signal.SIGKILL)
        self.bridge.wait()
        self.bridge = self._spawn("bridge")

    def keep_workers_alive(self) -> None:
        self.workers = [w if w.poll() is None else self._spawn("jobs.worker") for w in self.workers]

    def close(self) -> None:
        for process in [self.api, self.bridge, *self.workers]:
            process.terminate()
        for process in [self.api, self.bridge, *self.workers]:
            process.wait()
        self.stop_redis()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        from bridge.amqp.topology import Topology, delete_topology

        delete_topology(RABBITMQ_URL, Topology(self.queue))

    def verdict(self, ids: list[str], timeout_s: float) -> dict:
        """Wait until every id is finished (or the timeout); return counts of lost, twice, failed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.keep_workers_alive()
            pipe = self.connection.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(keys.job_key(task_id), "status")
            statuses = pipe.execute()
            if all(s in (b"finished", b"failed") for s in statuses):
                break
            time.sleep(0.5)
        pipe = self.connection.pipeline(transaction=False)
        for task_id in ids:
            pipe.hmget(keys.job_key(task_id), "status", "meta")
        rows = pipe.execute()
        lost = sum(1 for status, _ in rows if status is None)
        metas = {task_id: json.loads(meta) for task_id, (_, meta) in zip(ids, rows, strict=True) if meta}
        twice = {task_id: meta for task_id, meta in metas.items() if meta.get("attempts", 0) > 1}
        finished = sum(1 for status, _ in rows if status == b"finished")
        return {
            "submitted": len(ids),
            "finished": finished,
            "lost": lost,
            "ran_more_than_once": len(twice),
            # why each of those needed another attempt: the errors its earlier attempts recorded
            "repeated": [{"task_id": t, "errors": m.get("errors", [])} for t, m in list(twice.items())[:5]],
        }


def scenario_kill(tasks: int) -> dict:
    cluster = Cluster(workers=2)
    try:
        moved_marks = (int(tasks * 0.3), int(tasks * 0.65))
        kills: list[int] = []

        def killer() -> None:
            for mark in moved_marks:
                while cluster.connection.dbsize() < mark:  # roughly one key per moved task
                    time.sleep(0.01)
                cluster.kill_bridge()
                kills.append(mark)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        ids, errors = submit(cluster.api_port, tasks)
        thread.join(timeout=120)
        result = cluster.verdict(ids, timeout_s=300)
        return {**result, "http_errors": len(errors), "bridge_kills": len(kills)}
    finally:
        cluster.close()


def scenario_outage(tasks: int) -> dict:
    cluster = Cluster(workers=2)
    try:
        ids: list[str] = []
        errors: list[str] = []
        outage = threading.Event()

        def stop_for_ten_seconds() -> None:
            time.sleep(1.0)
            cluster.stop_redis()
            outage.set()
            time.sleep(10.0)
            cluster.start_redis()

        thread = threading.Thread(target=stop_for_ten_seconds, daemon=True)
        thread.start()
        deadline = time.monotonic() + 14
        while time.monotonic() < deadline:  # keep submitting through the outage
            batch_ids, batch_errors = submit(cluster.api_port, max(1, tasks // 14), concurrency=4)
            ids += batch_ids
            errors += batch_errors
        thread.join()
        result = cluster.verdict(ids, timeout_s=300)
        return {**result, "http_errors": len(errors), "redis_stopped_s": 10}
    finally:
        cluster.close()


def main() -> None:
    """Run both scenarios and print a verdict; exit 1 if anything was lost or ran twice."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--redis-outage-tasks", type=int, default=2_000)
    parser.add_argument("--only", choices=["kill", "outage"], help="run one scenario")
    args = parser.parse_args()
    results = {}
    if args.only in (None, "kill"):
        results["kill"] = scenario_kill(args.tasks)
    if args.only in (None, "outage"):
        results["outage"] = scenario_outage(args.redis_outage_tasks)
    print(json.dumps(results, indent=2))
    bad = any(r["lost"] or r["ran_more_than_once"] or r["finished"] != r["submitted"] for r in results.values())
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
