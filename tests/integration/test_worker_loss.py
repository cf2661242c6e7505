"""A task whose worker is killed mid-run is noticed within seconds and retried, with the loss recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from app import create_app
from tests.helpers import keyed_settings, wait_until
from tests.processes import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def children_of(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry))
    return children


@pytest.mark.parametrize("worker_class", ["simple", "fork"])
def test_killed_workers_task_is_retried(redis_url, real_redis, worker_class):
    # No back-off: a scheduled retry would wait for RQ's scheduler lock, which the killed worker held.
    settings = keyed_settings({"REDIS_URL": redis_url, "RETRY_BASE_S": "0"})
    client = create_app(settings, real_redis).test_client()
    body = {"task_type": "test_hold", "parameters": {"release_key": "release", "max_s": 60}, "max_retries": 1}
    task_id = client.post("/api/tasks", json=body).json["task_id"]
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "WORKER_CLASS": worker_class,
        "JOB_HEARTBEAT_S": "1",
        "MAINTENANCE_INTERVAL_S": "1",
        "RETRY_BASE_S": "0",
        "TASKRELAY_TASK_MODULES": "tests.fixture_tasks",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    first = subprocess.Popen([sys.executable, "-m", "jobs.worker"], cwd=ROOT, env=env, start_new_session=True)
    second = None
    try:
        wait_until(lambda: client.get(f"/api/tasks/{task_id}").json["state"] == "STARTED", 30, "the task to start")
        horses = children_of(first.pid)  # a forking worker's work horse runs in a session of its own
        os.killpg(first.pid, signal.SIGKILL)
        for pid in horses:
            os.kill(pid, signal.SIGKILL)
        first.wait()
        real_redis.set("release", "1")
        killed_at = time.monotonic()
        second = subprocess.Popen([sys.executable, "-m", "jobs.worker"], cwd=ROOT, env=env, start_new_session=True)

        def finished():
            answer = client.get(f"/api/tasks/{task_id}").json
            return answer if answer["state"] in ("SUCCESS", "FAILURE") else None

        done = wait_until(finished, 40, "the retry to finish")
        assert time.monotonic() - killed_at < 40
        assert done["state"] == "SUCCESS", done
        assert done["status"]["attempts"] == 2
        assert done["status"]["errors"][0]["type"] == "AbandonedJobError"
        assert done["status"]["result"] == {"released": True}
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
