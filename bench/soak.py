"""Soak: a steady submit load for minutes; the processes' RSS stays flat and Redis memory returns to its baseline.

    .venv/bin/python -m bench.soak [--tasks 200000] [--seconds 600] [--smoke]

Starts its own redis-server on a free port (bench.memory.private_redis, with
README's recommended memory settings; the machine's Redis is not touched), a
uniquely named ingress queue on the machine's RabbitMQ (deleted at the end),
gunicorn with 2 API workers (RabbitMQ ingress), the bridge and 2 batch
workers, with a short RESULT_TTL_S so results expire during the run. Then
TASKS no-op tasks (`bench_noop`, priorities mixed) are POSTed to 127.0.0.1 at
an even rate over SECONDS (bench.paced). Every --sample-s it records the RSS
(VmRSS) of the gunicorn master and each worker, the bridge, each batch worker
and its scheduler process, and Redis's used_memory and key count.

Reported: per process, RSS at the end of the warm-up (the first --warmup of
the load), its min, max and value at the end of the load, and the drift from
the warm-up value (flat: every later sample within +-10%); Redis used_memory
before the first submit (the baseline), during the load, once the backlog
drained, once every result expired (RESULT_TTL_S, then a maintenance pass
clears the registries) and after POST /api/tasks/purge (back: within
--tolerance-mb of the baseline); accepted, finished, failed and lost
(accepted, never ended). Writes bench/results/soak.{json,md} (soak-smoke.*
with --smoke). Exits 1 when a task was lost, or (not --smoke) the verdict fails.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from typing import Any

import redis

from bench.ingress import RABBITMQ_URL, start_api
from bench.memory import private_redis
from bench.paced import Submitted, submit_paced
from bench.procs import BENCH_API_KEY, ROOT, child_env, save_results, stop_all, wait_for
from bench.soak_report import Sample, report, sample_processes
from bridge.amqp.topology import Topology, delete_topology
from core.model import PRIORITIES, QUEUE_NAMES
from core.storage import keys
from infra.embedded import REDIS_MEMORY_SETTINGS

TICK_S = 0.5
"""How often the accepted tasks are checked for their end, in seconds (well under any RESULT_TTL_S used here)."""
ENDED = (b"finished", b"failed")
PROGRESS_EVERY = 6
"""Print a progress line every this many samples."""


class Tracker:
    """Follow every accepted task until its job hash says it ended (before RESULT_TTL_S deletes the hash)."""

    def __init__(self, connection: redis.Redis, accepted: list[str]) -> None:
        self.connection, self.accepted = connection, accepted
        self.seen = 0
        self.pending: set[str] = set()
        self.finished = self.failed = 0

    def check(self) -> None:
        """Take in newly accepted ids, then drop every pending id whose task ended."""
        fresh = self.accepted[self.seen :]  # the load thread only appends
        self.seen += len(fresh)
        self.pending.update(fresh)
        ids = list(self.pending)
        pipe = self.connection.pipeline(transaction=False)
        for task_id in ids:
            pipe.hget(keys.job_key(task_id), "status")
        for task_id, status in zip(ids, pipe.execute(), strict=True):
            if status in ENDED:
                self.pending.discard(task_id)
                self.finished += status == b"finished"
                self.failed += status == b"failed"


def _body(number: int) -> bytes:
    priority = random.Random(number).choice(PRIORITIES)
    return json.dumps({"task_type": "bench_noop", "priority": priority, "parameters": {"n": number}}).encode()


def _used_memory(connection: redis.Redis) -> int:
    info: Any = connection.info("memory")
    return int(info["used_memory"])


def _results_left(connection: redis.Redis) -> int:
    """Return how many job hashes and finished-registry entries are still in Redis."""
    jobs = sum(1 for _ in connection.scan_iter(match=keys.JOB_PREFIX + "*", count=1000))
    return jobs + sum(int(connection.zcard(keys.finished_key(name))) for name in QUEUE_NAMES.values())


def _purge(port: int) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/tasks/purge", method="POST", headers={"X-API-Key": BENCH_API_KEY}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return dict(json.loads(response.read()))


class Soak:
    """The system under soak, its measurements, and the phases of the run."""

    def __init__(self, args: argparse.Namespace, connection: redis.Redis, queue: str) -> None:
        self.args, self.connection = args, connection
        port = connection.connection_pool.connection_kwargs["port"]
        self.env = child_env(
            REDIS_URL=f"redis://127.0.0.1:{port}/0",
            RABBITMQ_URL=RABBITMQ_URL,
            INGRESS_QUEUE=queue,
            TASKRELAY_TASK_MODULES="bench.tasks",
            RESULT_TTL_S=str(args.result_ttl_s),
            FAILURE_TTL_S=str(args.result_ttl_s),
            MAINTENANCE_INTERVAL_S=str(args.maintenance_s),
        )
        self.api, self.port = start_api("app:create_app()", self.env)
        self.bridge = self._spawn("bridge")
        self.workers = [self._spawn("jobs.worker") for _ in range(2)]
        self.samples: list[Sample] = []
        self.baseline_names: set[bytes] = set()
        self.memory: dict[str, Any] = {}
        self.started = time.monotonic()

    def _spawn(self, module: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=self.env)

    def processes(self) -> dict[str, subprocess.Popen]:
        """Return the started processes by name."""
        workers = {f"worker {n}": worker for n, worker in enumerate(self.workers, 1)}
        return {"api master": self.api, "bridge": self.bridge, **workers}

    def stop(self) -> None:
        stop_all(list(self.processes().values()))

    def sample(self) -> None:
        """Record every process's RSS and Redis's used_memory and key count, at seconds since the load began."""
        rss = sample_processes(self.api.pid, self.bridge.pid, [worker.pid for worker in self.workers])
        at = time.monotonic() - self.started
        self.samples.append(Sample(at, rss, _used_memory(self.connection), int(self.connection.dbsize())))

    def settle(self) -> None:
        """Wait until both workers are registered and the API has touched Redis; take the baseline."""
        wait_for(lambda: self.connection.scard(keys.WORKERS_KEY) >= 2, 60, "both workers to register", poll_s=0.1)
        # One read through each API connection pool, so the baseline counts the API's Redis clients too.
        for _ in range(4):
            urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{self.port}/api/queues", headers={"X-API-Key": BENCH_API_KEY})
            ).read()
        self.memory["baseline"] = _used_memory(self.connection)
        self.memory["baseline_keys"] = int(self.connection.dbsize())
        self.baseline_names = set(self.connection.scan_iter(count=1000))

    def _progress(self, submitted: Submitted, tracker: Tracker) -> None:
        last = self.samples[-1]
        print(
            f"{last.at:6.0f} s  accepted {len(submitted.accepted):,}  ended {tracker.finished + tracker.failed:,}"
            f"  Redis {last.used_memory / 2**20:.1f} MB  RSS total {sum(last.rss.values()):.0f} MB",
            flush=True,
        )

    def load(self, submitted: Submitted) -> Tracker:
        """Run the paced load, sampling and tracking as it goes, then wait for the backlog to drain."""
        args = self.args
        tracker = Tracker(self.connection, submitted.accepted)
        loader = threading.Thread(
            target=submit_paced, args=(self.port, args.tasks, args.seconds, _body, submitted), daemon=True
        )
        self.started = time.monotonic()
        loader.start()
        next_sample = self.started
        drain_deadline: float | None = None
        while True:
            now = time.monotonic()
            if now >= next_sample:
                self.sample()
                next_sample += args.sample_s
                if len(self.samples) % PROGRESS_EVERY == 1:
                    self._progress(submitted, tracker)
            tracker.check()
            if drain_deadline is None and not loader.is_alive():
                self.memory["load_end_s"] = round(now - self.started, 1)
                self.sample()
                drain_deadline = now + max(60.0, args.seconds * 0.2)
            if drain_deadline is not None and (not tracker.pending or now > drain_deadline):
                break
            time.sleep(TICK_S)
        self.memory["drained_s"] = round(time.monotonic() - self.started, 1)
        self.memory["drained"] = _used_memory(self.connection)
        self.memory["drained_keys"] = int(self.connection.dbsize())
        return tracker

    def expire_and_purge(self) -> dict[str, Any]:
        """Wait for every result to expire and leave its registry, record memory; then purge and record again."""
        args = self.args
        budget = args.result_ttl_s + 3 * args.maintenance_s + 30
        began = time.monotonic()
        try:
            wait_for(lambda: _results_left(self.connection) == 0, budget, "every result to expire", poll_s=0.5)
        except RuntimeError as exc:
            print(exc, flush=True)
        self.memory["expired_wait_s"] = round(time.monotonic() - began, 1)
        self.memory["results_left_after_ttl"] = _results_left(self.connection)
        self.memory["after_ttl"] = _used_memory(self.connection)
        self.memory["after_ttl_keys"] = int(self.connection.dbsize())
        purged = _purge(self.port)
        self.memory["after_purge"] = _used_memory(self.connection)
        self.memory["after_purge_keys"] = int(self.connection.dbsize())
        names = set(self.connection.scan_iter(count=1000)) - self.baseline_names
        self.memory["new_keys_after_purge"] = sorted(name.decode() for name in names)
        self.sample()
        return purged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=600.0, help="how long the submits are spread over")
    parser.add_argument("--smoke", action="store_true", help="1,500 tasks over 10 s: proves the harness works")
    parser.add_argument("--sample-s", type=float, default=5.0, help="seconds between RSS and memory samples")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction of the load before the RSS reference")
    parser.add_argument("--result-ttl-s", type=int, default=60, help="RESULT_TTL_S (and FAILURE_TTL_S) of the run")
    parser.add_argument("--maintenance-s", type=int, default=10, help="MAINTENANCE_INTERVAL_S of the workers")
    parser.add_argument("--tolerance-mb", type=float, default=1.0, help="how far from the baseline counts as back")
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.seconds, args.sample_s, args.result_ttl_s, args.maintenance_s = 1500, 10.0, 1.0, 5, 2
    queue = f"taskrelay.soak.{uuid.uuid4().hex[:8]}"
    submitted = Submitted()
    with private_redis(REDIS_MEMORY_SETTINGS) as connection:
        soak = Soak(args, connection, queue)
        try:
            soak.settle()
            tracker = soak.load(submitted)
            purged = soak.expire_and_purge()
            exits = {name: process.poll() for name, process in soak.processes().items() if process.poll() is not None}
        finally:
            soak.stop()
            delete_topology(RABBITMQ_URL, Topology(queue))
    result = report(args, soak.samples, soak.memory, submitted, tracker, purged, exits)
    name = "soak-smoke" if args.smoke else "soak"
    save_results(name, result["markdown"], result["data"])
    print(result["markdown"])
    if result["data"]["lost"] or (not args.smoke and not result["data"]["pass"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
