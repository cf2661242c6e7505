"""The whole system as separate processes (gunicorn API, RQ workers) against the real Redis, driven over HTTP."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.processes import http, running_system
from tests.smtp_server import smtp_server  # noqa: F401

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SEED_TASK = {"task_type": "data_processing", "priority": "high", "parameters": {"data": "example data"}}


def listening_sockets(port: int) -> int:
    """Count the TCP sockets listening on `port` (IPv4), from /proc/net/tcp."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1].endswith(f":{port:04X}") and row.split()[3] == "0A")


def test_seed_calls_over_http(redis_url, real_redis):
    with running_system(redis_url) as system:
        # gunicorn.conf.py: each of the 2 API workers has its own SO_REUSEPORT socket, so the kernel
        # spreads keep-alive clients over both instead of one worker accepting them all
        assert listening_sockets(int(system.base_url.rsplit(":", 1)[1])) == 2
        task_id = system.submit(SEED_TASK)
        done = system.wait_for(task_id)
        assert done["state"] == "SUCCESS"
        assert done["status"]["result"]["data"] == {"data": "example data"}
        assert done["status"]["result"]["processed"] is True

        code, page = http("GET", f"{system.base_url}/api/tasks?state=SUCCESS&type=completed")
        assert code == 200
        assert [t["task_id"] for t in page["tasks"]] == [task_id]

        code, purged = http("POST", f"{system.base_url}/api/tasks/purge")
        assert code == 200
        assert purged["status"] == "success"
        assert http("GET", f"{system.base_url}/api/tasks/{task_id}")[0] == 404
        assert real_redis.keys("rq:job:*") == []
        assert real_redis.keys("rq:results:*") == []


def test_every_task_type_end_to_end(redis_url, smtp_server, tmp_path):  # noqa: F811
    files, output = tmp_path / "files", tmp_path / "output"
    files.mkdir()
    (files / "people.csv").write_text("name,age\nann,31\nbob,45\n")
    env = {
        "FILES_DIR": str(files),
        "OUTPUT_DIR": str(output),
        "SMTP_HOST": smtp_server.host,
        "SMTP_PORT": str(smtp_server.port),
    }
    with running_system(redis_url, env=env) as system:
        email = system.submit(
            {
                "task_type": "email_sending",
                "parameters": {
                    "to": "ann@example.com",
                    "subject": "Hi {{ name }}",
                    "body": "Hello {{ name }}",
                    "variables": {"name": "Ann"},
                },
            }
        )
        csv = system.submit(
            {"task_type": "file_processing", "parameters": {"path": "people.csv", "operations": ["column_stats"]}}
        )
        escape = system.submit({"task_type": "file_processing", "parameters": {"path": "../../etc/passwd"}})

        assert system.wait_for(email)["state"] == "SUCCESS"
        [message] = smtp_server.messages
        assert message.message["Subject"] == "Hi Ann"
        assert message.message.get_content().strip() == "Hello Ann"

        csv_done = system.wait_for(csv)
        assert csv_done["state"] == "SUCCESS", csv_done
        written = json.loads(Path(csv_done["status"]["result"]["output"]).read_text())
        ages = next(c for c in written["results"]["column_stats"]["columns"] if c["name"] == "age")
        assert ages["mean"] == 38

        refused = system.wait_for(escape)
        assert refused["state"] == "FAILURE"
        assert refused["status"]["attempts"] == 1
        assert "FILES_DIR" in refused["status"]["error"]["message"]


def test_a_thousand_mixed_tasks_all_finish(redis_url):
    rng = random.Random(7)
    bodies = []
    for n in range(1000):
        priority = rng.choice(["high", "normal", "low"])
        if n % 20 == 0:
            bodies.append({"task_type": "test_bad_input", "priority": priority, "parameters": {}})
        else:
            data = [{"k": rng.randint(0, 5), "v": rng.random()} for _ in range(rng.randint(1, 30))]
            operations = [{"op": "group_by", "field": "k", "aggregates": {"total": {"fn": "sum", "field": "v"}}}]
            bodies.append(
                {
                    "task_type": "data_processing",
                    "priority": priority,
                    "parameters": {"data": data, "operations": operations},
                }
            )
    with running_system(redis_url, workers=2) as system:
        with ThreadPoolExecutor(max_workers=8) as pool:
            task_ids = list(pool.map(system.submit, bodies))
        assert len(set(task_ids)) == 1000
        with ThreadPoolExecutor(max_workers=8) as pool:
            finals = list(pool.map(lambda t: system.wait_for(t, timeout=120), task_ids))
        states = Counter(f["state"] for f in finals)
        assert states == {"SUCCESS": 950, "FAILURE": 50}
        for body, final in zip(bodies, finals, strict=True):
            assert (final["state"] == "FAILURE") == (body["task_type"] == "test_bad_input")
        code, page = http("GET", f"{system.base_url}/api/tasks?type=completed&limit=1")
        assert code == 200
        assert page["total"] == 1000


def test_purge_stops_a_running_task(redis_url, real_redis):
    # Only a forking worker can interrupt a running task (it kills the work horse).
    with running_system(redis_url, workers=1, env={"WORKER_CLASS": "fork"}) as system:
        held = system.submit({"task_type": "test_hold", "parameters": {"release_key": "never", "max_s": 60}})
        running = system.wait_for(held, states=("STARTED",))
        code, active = http("GET", f"{system.base_url}/api/tasks?type=active")
        assert [t["task_id"] for t in active["tasks"]] == [held]
        deadline = time.monotonic() + 10
        while (progress := system.status(held)["status"]["progress"]) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert progress == {"done": 1, "total": 2, "message": "holding", "percent": 50.0}
        queued = system.submit({**SEED_TASK, "priority": "low", "delay_seconds": 600})

        code, purged = http("POST", f"{system.base_url}/api/tasks/purge")
        assert code == 200
        assert purged["details"]["active_tasks_revoked"] == 1
        assert purged["details"]["scheduled_tasks_revoked"] == 1
        assert running["state"] == "STARTED"
        for task_id in (held, queued):
            assert http("GET", f"{system.base_url}/api/tasks/{task_id}")[0] == 404
        # A purge keeps the API keys and the metrics counters.
        kept = (b"rq:worker", b"rq:workers", b"rq:queues", b"taskrelay:apikeys", b"taskrelay:metrics:")
        task_keys = [k for k in real_redis.keys("*") if not k.startswith(kept)]
        assert [k for k in task_keys if b"rq:scheduler" not in k and b"rq:clean" not in k] == []
        # The worker survived the stop and keeps working.
        assert system.wait_for(system.submit(SEED_TASK))["state"] == "SUCCESS"
