"""Chaos: the whole system under load while its processes and servers are killed; nothing accepted may be lost.

    .venv/bin/python -m bench.chaos [--smoke] [--tasks 10000] [--workflows 200] [--appendfsync always]
                                    [--ingress-mode dual|rabbitmq|redis-first]

It starts its own servers, so the machine's are never touched: a Redis with
AOF on a free port (the system's Redis), a RabbitMQ node on a free port (the
ingress), and a TCP proxy between the API and that node. Then gunicorn (2
workers, RabbitMQ ingress), the bridge and 3 batch workers. Clients submit
TASKS tasks (priorities mixed, no-op and 20 ms) and WORKFLOWS workflows over
HTTP, each with an Idempotency-Key, retrying after 503, lost connections and
409 (still in flight) until answered 202; clients done before the last event
keep submitting, EXTRA_PACE_S apart, until it has happened, so that every event
meets submissions in flight. Meanwhile, on a schedule:

    a worker SIGKILLed x5 (a new one started each time), the bridge SIGKILLed x2
    (restarted), one gunicorn worker SIGKILLed (gunicorn replaces it), RabbitMQ
    restarted, API <-> RabbitMQ cut for 10 s, Redis restarted with SIGTERM and
    with SIGKILL (AOF replayed), API <-> RabbitMQ silent for 8 s (connections
    kept and new ones accepted, nothing forwarded: a network dropping packets).

Every task counts its runs in a Redis the run never kills (the machine's, db
BENCH_REDIS_DBS[0]). Printed at the end: accepted, finished, failed, lost
(accepted, never finished: must be 0), run more than once (with the likely
cause), the longest wait of an abandoned task before its retry, HTTP answers by
status (whether every 503 carried Retry-After), and workflows finished.
Writes bench/results/chaos.{json,md} for the default INGRESS_MODE=dual (chaos-smoke.* with --smoke;
chaos-rabbitmq.* with --ingress-mode rabbitmq, where only the bridge enqueues; chaos-redis-first.* with
--ingress-mode redis-first, where the API enqueues into Redis and publishes only while Redis is down).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from bench.procs import BENCH_API_KEY, ROOT, child_env, descendants, save_results, stop_all, wait_for
from bench.proxy import TcpProxy
from bench.tasks import CHAOS_RUNS_KEY
from core.storage.keys import JOB_PREFIX, job_key
from infra.processes import free_port

OBSERVER_URL = f"redis://127.0.0.1:6379/{os.environ.get('BENCH_REDIS_DBS', '13,14').split(',')[0]}"
PRIORITIES = ("high", "normal", "low")
EXTRA_PACE_S = 0.2
"""How far apart a client that submitted its share sends its extra tasks until the last event, in seconds."""
SLOW_ANSWER_S = 1.0
"""An answer that took longer is reported (a submit held up by a failing server)."""
KILLED_WHILE_RUNNING = "its worker was killed while it ran (an abandoned attempt, retried)"
RAN_AGAIN_UNRECORDED = (
    "ran again with no failed attempt recorded (its worker was killed after running it, before writing its end)"
)


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class OwnRedis:
    """A redis-server with AOF on a free port, in a directory of its own; restartable with either signal."""

    def __init__(self, workdir: Path, appendfsync: str) -> None:
        self.dir = workdir / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.appendfsync = appendfsync
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir)]
        argv += ["--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", ""]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _answers(self.url), 30, "the chaos Redis", poll_s=0.05)

    def restart(self, how: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(how)
        self.process.wait(timeout=30)
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except redis.exceptions.RedisError:
        return False


class OwnRabbit:
    """A RabbitMQ node of its own (own name, port, data directory), restartable; guest/guest on 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "rabbitmq"
        (self.dir / "mnesia").mkdir(parents=True)
        (self.dir / "log").mkdir()
        (self.dir / "plugins").write_text("[].\n")
        self.port = free_port()
        (self.dir / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        self.node = f"chaos{os.getpid()}@localhost"
        if _has_user("rabbitmq"):  # Debian's rabbitmq-server runs the node as that user
            for path in [self.dir, *self.dir.rglob("*")]:
                shutil.chown(path, "rabbitmq")
        self.env = {
            **os.environ,
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.dir / "feature_flags"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "plugins"),
            "RABBITMQ_PID_FILE": str(self.dir / "pid"),
        }
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["rabbitmq-server"], env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for(lambda: _listening(self.port), 90, "the chaos RabbitMQ node", poll_s=0.2)

    def stop(self) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], env=self.env, capture_output=True, timeout=60)
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        wait_for(lambda: not _listening(self.port), 30, "the chaos RabbitMQ node to stop", poll_s=0.2)

    def restart(self) -> None:
        self.stop()
        self.start()


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@dataclass
class Answers:
    """What the clients were answered."""

    statuses: Counter = field(default_factory=Counter)
    unavailable_without_retry_after: int = 0
    connection_errors: int = 0
    submitted_tasks: int = 0
    """Tasks the clients set out to submit (each retried until answered 202, or the deadline)."""
    accepted_tasks: set[str] = field(default_factory=set)
    accepted_workflows: dict[str, str] = field(default_factory=dict)
    """workflow id -> the task id of its last step."""
    gave_up: int = 0
    unavailable: list[tuple[float, str, str]] = field(default_factory=list)
    """Each 503: (seconds into the run, path, the error it gave)."""
    slow: list[tuple[float, float, int]] = field(default_factory=list)
    """Each answer that took over SLOW_ANSWER_S: (seconds it took, seconds into the run it came, status)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class Client:
    """One keep-alive HTTP client that resubmits with the same Idempotency-Key until it gets a 202."""

    def __init__(self, port: int, answers: Answers, started: float, deadline: float) -> None:
        self.port = port
        self.answers = answers
        self.started = started
        self.deadline = deadline
        self.connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        key = str(uuid.uuid4())
        payload = json.dumps(body)
        headers = {"Content-Type": "application/json", "X-API-Key": BENCH_API_KEY, "Idempotency-Key": key}
        wait = 0.05
        while time.monotonic() < self.deadline:
            try:
                if self.connection is None:
                    self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                asked = time.monotonic()
                self.connection.request("POST", path, payload, headers)
                response = self.connection.getresponse()
                data = response.read()
                took = time.monotonic() - asked
            except (OSError, http.client.HTTPException):
                with self.answers.lock:
                    self.answers.connection_errors += 1
                self._reset()
                time.sleep(wait)
                wait = min(2.0, wait * 2)
                continue
            with self.answers.lock:
                self.answers.statuses[response.status] += 1
                at = round(time.monotonic() - self.started, 1)
                if took > SLOW_ANSWER_S:
                    self.answers.slow.append((round(took, 1), at, response.status))
                if response.status == 503:
                    if not response.getheader("Retry-After"):
                        self.answers.unavailable_without_retry_after += 1
                    self.answers.unavailable.append((at, path, _error_text(data)))
            if response.status == 202:
                return dict(json.loads(data))
            if response.status in (409, 429, 503) or response.status >= 500:
                time.sleep(min(float(response.getheader("Retry-After") or wait), 2.0))
                wait = min(2.0, wait * 2)
                continue
            raise RuntimeError(f"{path} answered {response.status}: {data[:300]!r}")
        with self.answers.lock:
            self.answers.gave_up += 1
        return None

    def _reset(self) -> None:
        if self.connection is not None:
            self.connection.close()
        self.connection = None


def _error_text(data: bytes) -> str:
    """A 503's error message, without the advice every one of them ends with."""
    try:
        text = str(json.loads(data).get("message", ""))
    except (ValueError, AttributeError):
        text = data[:100].decode(errors="replace")
    return text.split("; the request was not accepted")[0]


def _slow_answers(slow: list[tuple[float, float, int]]) -> dict[str, Any]:
    """How many answers took over SLOW_ANSWER_S, the longest, and when they came (seconds into the run)."""
    if not slow:
        return {"count": 0}
    return {
        "count": len(slow),
        "longest_s": max(took for took, _, _ in slow),
        "from_s": min(at for _, at, _ in slow),
        "to_s": max(at for _, at, _ in slow),
        "statuses": dict(Counter(str(status) for _, _, status in slow)),
        "each": sorted(slow, key=lambda answer: answer[1]),
    }


def _slow_text(slow: dict[str, Any]) -> str:
    if not slow["count"]:
        return "none"
    statuses = ", ".join(f"{status}: {n}" for status, n in slow["statuses"].items())
    each = ", ".join(f"{took} s at {at} s" for took, at, _ in slow["each"][:40])
    return f"{slow['count']} ({statuses}), the longest {slow['longest_s']} s; each, by when it came: {each}"


def _unavailable_by_cause(unavailable: list[tuple[float, str, str]]) -> list[dict[str, Any]]:
    """The 503s grouped by path and error, each group with its count and when it came (seconds into the run)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for at, path, error in unavailable:
        groups.setdefault((path, error), []).append(at)
    return [
        {"path": path, "error": error, "count": len(times), "from_s": min(times), "to_s": max(times)}
        for (path, error), times in sorted(groups.items(), key=lambda item: min(item[1]))
    ]


def _workflow(n: int) -> dict[str, Any]:
    step = {"task_type": "bench_chaos", "parameters": {"n": n}}
    return {
        "name": f"chaos-{n}",
        "steps": [
            {"id": "a", **step},
            {"id": "b", **step, "depends_on": ["a"]},
            {"id": "c", **step, "depends_on": ["a"]},
            {"id": "d", **step, "depends_on": ["b", "c"]},
        ],
    }


class System:
    """The API (gunicorn), the bridge and the workers, each restartable, on the chaos servers."""

    def __init__(self, redis_url: str, rabbit_url: str, queue: str, workers: int, ingress_mode: str) -> None:
        self.env = child_env(
            REDIS_URL=redis_url,
            RABBITMQ_URL=rabbit_url,
            INGRESS_QUEUE=queue,
            INGRESS_MODE=ingress_mode,
            TASKRELAY_TASK_MODULES="bench.tasks",
            CHAOS_OBSERVER_URL=OBSERVER_URL,
            RETRY_BASE_S="0.5",
            RETRY_MAX_S="2",
            JOB_HEARTBEAT_S="2",
            MAINTENANCE_INTERVAL_S="5",
        )
        self.port = free_port()
        argv = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}", "--workers", "2"]
        argv += ["--threads", "8", "--log-level", "warning", "app:create_app()"]
        self.api = subprocess.Popen(argv, cwd=ROOT, env=self.env)
        wait_for(lambda: _listening(self.port), 60, "the API", poll_s=0.1)
        self.bridge = self._spawn("bridge")
        self.workers = [self._spawn("jobs.worker") for _ in range(workers)]
        self.kills: list[tuple[float, str]] = []

    def _spawn(self, module: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=self.env)

    def kill_worker(self) -> None:
        victim = self.workers.pop(0)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        self.kills.append((time.time(), "worker"))
        self.workers.append(self._spawn("jobs.worker"))

    def kill_bridge(self) -> None:
        self.bridge.send_signal(signal.SIGKILL)
        self.bridge.wait()
        self.kills.append((time.time(), "bridge"))
        self.bridge = self._spawn("bridge")

    def kill_api_worker(self) -> None:
        children = descendants(self.api.pid)
        if children:
            os.kill(children[0], signal.SIGKILL)
            self.kills.append((time.time(), "api"))

    def stop(self) -> None:
        stop_all([self.api, self.bridge, *self.workers])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a small run with the same events, for the test suite")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--workflows", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--appendfsync", default="always", choices=("always", "everysec"))
    parser.add_argument("--ingress-mode", default="dual", choices=("dual", "rabbitmq", "redis-first"))
    args = parser.parse_args()
    if args.smoke:
        args.tasks, args.workflows = 400, 10
    random.seed(7)
    observer = redis.Redis.from_url(OBSERVER_URL)
    observer.delete(CHAOS_RUNS_KEY)
    workdir = Path(tempfile.mkdtemp(prefix="taskrelay-chaos-"))
    os.chmod(workdir, 0o755)
    own_redis = OwnRedis(workdir, args.appendfsync)
    rabbit = OwnRabbit(workdir)
    proxy = TcpProxy("127.0.0.1", rabbit.port)
    queue = f"taskrelay.chaos.{uuid.uuid4().hex[:8]}"
    rabbit_url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/%2F"
    system = System(own_redis.url, rabbit_url, queue, workers=3, ingress_mode=args.ingress_mode)
    answers = Answers()
    started = time.monotonic()
    try:
        report = _run(args, system, own_redis, rabbit, proxy, answers, started)
    finally:
        system.stop()
        proxy.close()
        rabbit.stop()
        own_redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    name = "chaos" + ("" if args.ingress_mode == "dual" else f"-{args.ingress_mode}") + ("-smoke" if args.smoke else "")
    save_results(name, report["markdown"], report["data"])
    print(report["markdown"])
    if report["data"]["lost"]:
        sys.exit(1)


def _run(
    args: argparse.Namespace,
    system: System,
    own_redis: OwnRedis,
    rabbit: OwnRabbit,
    proxy: TcpProxy,
    answers: Answers,
    started: float,
) -> dict[str, Any]:
    scale = 0.25 if args.smoke else 1.0
    events: list[tuple[float, str, Any]] = [
        (3, "worker killed", system.kill_worker),
        (6, "bridge killed", system.kill_bridge),
        (9, "worker killed", system.kill_worker),
        (12, "API worker killed", system.kill_api_worker),
        (15, "API <-> RabbitMQ cut for 10 s", proxy.partition),
        (25, "API <-> RabbitMQ healed", proxy.heal),
        (28, "worker killed", system.kill_worker),
        (31, "RabbitMQ restarted", rabbit.restart),
        (36, "bridge killed", system.kill_bridge),
        (40, "worker killed", system.kill_worker),
        (44, "Redis restarted (SIGTERM)", lambda: own_redis.restart(signal.SIGTERM)),
        (50, "worker killed", system.kill_worker),
        (54, "Redis restarted (SIGKILL)", lambda: own_redis.restart(signal.SIGKILL)),
        (58, "API <-> RabbitMQ silent for 8 s", proxy.silence),
        (66, "API <-> RabbitMQ heard again", proxy.heal),
    ]
    done_events: list[tuple[float, str]] = []
    deadline = started + 600

    every = max(1, args.tasks // max(1, args.workflows))

    events_over = threading.Event()

    def numbers(worker_number: int) -> Any:
        """This client's task numbers: its share of TASKS, then more, paced, until the last event happened."""
        n = worker_number
        while n < args.tasks or not events_over.is_set():
            if n >= args.tasks:
                events_over.wait(EXTRA_PACE_S)
            yield n
            n += args.clients

    def load(worker_number: int) -> None:
        client = Client(system.port, answers, started, deadline)
        for n in numbers(worker_number):
            body = {
                "task_type": "bench_chaos",
                "priority": random.choice(PRIORITIES),
                "parameters": {"n": n, "sleep_ms": random.choice((0, 20))},
            }
            with answers.lock:
                answers.submitted_tasks += 1
            answer = client.post("/api/tasks", body)
            if answer is not None:
                with answers.lock:
                    answers.accepted_tasks.add(answer["task_id"])
            if n % every == 0 and n // every < args.workflows:
                flow = client.post("/api/workflows", _workflow(n))
                if flow is not None:
                    with answers.lock:
                        answers.accepted_workflows[flow["workflow_id"]] = flow["steps"]["d"]["task_id"]

    clients = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(args.clients)]
    for thread in clients:
        thread.start()
    for at, what, action in events:
        pause = started + at * scale - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        action()
        done_events.append((round(time.monotonic() - started, 1), what))
        print(f"{done_events[-1][0]:6.1f} s  {what}", flush=True)
    events_over.set()
    for thread in clients:
        thread.join(timeout=max(1.0, deadline - time.monotonic()))
    submitted_s = time.monotonic() - started
    connection = redis.Redis.from_url(own_redis.url)
    ids = sorted(answers.accepted_tasks)
    workflow_finals = answers.accepted_workflows

    def statuses(task_ids: list[str]) -> list[bytes | None]:
        pipe = connection.pipeline(transaction=False)
        for task_id in task_ids:
            pipe.hget(job_key(task_id), "status")
        return list(pipe.execute())

    def settled() -> bool:
        try:
            ended = statuses(ids + list(workflow_finals.values()))
        except redis.exceptions.RedisError:
            return False
        return all(status in (b"finished", b"failed") for status in ended)

    try:
        wait_for(settled, 300, "every accepted task to end", poll_s=1.0)
    except RuntimeError as exc:
        print(exc, flush=True)
    drained_s = time.monotonic() - started
    return _report(args, connection, ids, workflow_finals, answers, done_events, system, submitted_s, drained_s)


def _whereabouts(connection: redis.Redis, task_id: str) -> dict[str, Any]:
    """Where a lost task is: its job's status and errors, and every RQ list or registry holding its id."""
    from core.storage.queues import SERIALIZER

    job: Any = connection.hgetall(job_key(task_id))
    places = []
    names: Any = connection.keys(JOB_PREFIX.split(":", 1)[0] + ":*")  # every RQ key
    for raw in names:
        kind: Any = connection.type(raw)
        members: Any = connection.zrange(raw, 0, -1) if kind == b"zset" else []
        if (kind == b"list" and connection.lpos(raw, task_id) is not None) or any(
            task_id in member.decode() for member in members
        ):
            places.append(raw.decode())
    meta = SERIALIZER.loads(job[b"meta"]) if job.get(b"meta") else {}
    status = (job.get(b"status") or b"(no job)").decode()
    return {"status": status, "in": places, "errors": meta.get("errors"), "attempts": meta.get("attempts")}


def _report(
    args: argparse.Namespace,
    connection: redis.Redis,
    ids: list[str],
    workflow_finals: dict[str, str],
    answers: Answers,
    events: list[tuple[float, str]],
    system: System,
    submitted_s: float,
    drained_s: float,
) -> dict[str, Any]:
    from core.storage.queues import SERIALIZER

    pipe = connection.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(job_key(task_id), "status", "meta", "started_at")
    rows = pipe.execute()
    runs_raw: Any = redis.Redis.from_url(OBSERVER_URL).hgetall(CHAOS_RUNS_KEY)
    runs = {key.decode(): int(value) for key, value in runs_raw.items()}
    finished = sum(1 for status, _, _ in rows if status == b"finished")
    failed = sum(1 for status, _, _ in rows if status == b"failed")
    lost = [
        task_id for task_id, (status, _, _) in zip(ids, rows, strict=True) if status not in (b"finished", b"failed")
    ]
    lost_detail = {task_id: _whereabouts(connection, task_id) for task_id in lost[:20]}
    twice: Counter = Counter()
    longest_wait = 0.0
    kill_times = sorted(t for t, what in system.kills if what == "worker")
    for task_id, (_status, meta_raw, started_at) in zip(ids, rows, strict=True):
        meta = SERIALIZER.loads(meta_raw) if meta_raw else {}
        errors = meta.get("errors") or []
        if runs.get(task_id, 0) > 1:
            kinds = {e.get("type") for e in errors}
            cause = KILLED_WHILE_RUNNING if "AbandonedJobError" in kinds else RAN_AGAIN_UNRECORDED
            twice[cause] += 1
        abandoned = [e for e in errors if e.get("type") == "AbandonedJobError"]
        if abandoned and started_at:
            retried_at = datetime.fromisoformat(started_at.decode().replace("Z", "+00:00")).timestamp()
            killed = max((t for t in kill_times if t <= retried_at), default=None)
            if killed is not None:
                longest_wait = max(longest_wait, retried_at - killed)
    finals = list(workflow_finals.values())
    pipe = connection.pipeline(transaction=False)
    for task_id in finals:
        pipe.hget(job_key(task_id), "status")
    workflows_done = sum(1 for status in pipe.execute() if status == b"finished")
    statuses = dict(sorted(answers.statuses.items()))
    unavailable = _unavailable_by_cause(answers.unavailable)
    slow = _slow_answers(answers.slow)
    data = {
        "tasks_submitted": answers.submitted_tasks,
        "accepted": len(ids),
        "finished": finished,
        "failed": failed,
        "lost": len(lost),
        "lost_detail": lost_detail,
        "run_more_than_once": dict(twice),
        "longest_abandoned_wait_s": round(longest_wait, 1),
        "http_statuses": statuses,
        "connection_errors": answers.connection_errors,
        "503_without_retry_after": answers.unavailable_without_retry_after,
        "503_by_cause": unavailable,
        "slow_answers": slow,
        "gave_up": answers.gave_up,
        "workflows_accepted": len(finals),
        "workflows_finished": workflows_done,
        "events": events,
        "submitted_s": round(submitted_s, 1),
        "drained_s": round(drained_s, 1),
        "appendfsync": args.appendfsync,
        "ingress_mode": args.ingress_mode,
    }
    lines = [
        f"Chaos run ({answers.submitted_tasks} tasks, {args.workflows} workflows, 3 batch workers, gunicorn 2 workers,"
        " own Redis"
        f" with appendfsync {args.appendfsync}, own RabbitMQ node, INGRESS_MODE={args.ingress_mode}; one run)",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| accepted (answered 202) | {len(ids)} |",
        f"| finished | {finished} |",
        f"| failed | {failed} |",
        f"| **lost** (accepted, never ended) | **{len(lost)}** |",
        f"| ran more than once | {sum(twice.values())} |",
        f"| longest wait of an abandoned task before its retry | {longest_wait:.1f} s |",
        f"| workflows finished / accepted | {workflows_done} / {len(finals)} |",
        f"| HTTP answers by status | {', '.join(f'{k}: {v}' for k, v in statuses.items())} |",
        f"| 503 without Retry-After | {answers.unavailable_without_retry_after} |",
        f"| connections lost mid-request (retried) | {answers.connection_errors} |",
        f"| all submitted after / all ended after | {submitted_s:.0f} s / {drained_s:.0f} s |",
        "",
        "Ran more than once, by cause: " + ("; ".join(f"{k}: {v}" for k, v in twice.items()) or "none"),
        "",
        f"Answers slower than {SLOW_ANSWER_S:g} s: " + _slow_text(slow),
        "",
        "503s by cause (path, error, count, when): "
        + (
            "; ".join(f'{u["path"]} "{u["error"]}" x{u["count"]} at {u["from_s"]}-{u["to_s"]} s' for u in unavailable)
            or "none"
        ),
        "",
        "Events: " + "; ".join(f"{at} s {what}" for at, what in events),
        "",
    ]
    return {"markdown": "\n".join(lines), "data": data}


if __name__ == "__main__":
    main()
