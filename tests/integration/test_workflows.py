"""Workflows on the real Redis with worker processes of each class: results flow, fan-in waits, failures cascade."""

from __future__ import annotations

import pytest

from app import create_app
from core.settings import WORKER_CLASSES
from tests.helpers import keyed_settings, wait_until
from tests.processes import killed_and_replaced, spawn_worker, stop_worker

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_diamond_runs_in_order_with_results_passed(redis_url, real_redis, worker_class):
    client = create_app(keyed_settings({"REDIS_URL": redis_url}), real_redis).test_client()
    steps = [
        {"id": "source", "task_type": "test_echo", "parameters": {"rows": [1, 2, 3, 4]}},
        *(
            {
                "id": f"branch{n}",
                "task_type": "test_sum",
                "parameters": {"values": {"$from": "source", "path": "/echo/rows"}},
                "depends_on": ["source"],
            }
            for n in range(3)
        ),
        {
            "id": "join",
            "task_type": "test_sum",
            "parameters": {"values": [{"$from": f"branch{n}", "path": "/sum"} for n in range(3)]},
            "depends_on": ["branch0", "branch1", "branch2"],
        },
        {"id": "broken", "task_type": "test_bad_input", "depends_on": ["source"]},
        {"id": "never", "task_type": "test_echo", "depends_on": ["broken", "join"]},
        {
            "id": "tolerant",
            "task_type": "test_echo",
            "parameters": {"broken": {"$from": "broken"}, "join": {"$from": "join", "path": "/sum"}},
            "depends_on": ["broken", "join"],
            "allow_failure": ["broken"],
        },
    ]
    answer = client.post("/api/workflows", json={"name": "diamond", "steps": steps})
    assert answer.status_code == 202, answer.json
    workflow_id = answer.json["workflow_id"]
    workers = [spawn_worker(redis_url, WORKER_CLASS=worker_class) for _ in range(2)]
    try:

        def ended():
            status = client.get(f"/api/workflows/{workflow_id}").json
            return status if status["state"] in ("SUCCESS", "FAILURE") else None

        done = wait_until(ended, 60, "the workflow to end")
    finally:
        for worker in workers:
            stop_worker(worker, kill=True)
    states = {step_id: entry["state"] for step_id, entry in done["steps"].items()}
    assert states == {
        "source": "SUCCESS",
        "branch0": "SUCCESS",
        "branch1": "SUCCESS",
        "branch2": "SUCCESS",
        "join": "SUCCESS",
        "broken": "FAILURE",
        "never": "REVOKED",
        "tolerant": "SUCCESS",
    }
    assert done["steps"]["tolerant"]["result"]["echo"]["join"] == 30
    assert done["steps"]["tolerant"]["result"]["echo"]["broken"]["error"]["type"] == "TaskInputError"
    assert done["state"] == "FAILURE"
    assert done["steps"]["join"]["result"] == {"sum": 30, "count": 3}
    join, branches = done["steps"]["join"], [done["steps"][f"branch{n}"] for n in range(3)]
    assert join["started_at"] > max(branch["ended_at"] for branch in branches)


def test_a_worker_killed_mid_workflow_loses_no_step(redis_url, real_redis):
    client = create_app(keyed_settings({"REDIS_URL": redis_url, "RETRY_BASE_S": "0"}), real_redis).test_client()
    steps = [{"id": "s0", "task_type": "test_count", "parameters": {"sleep_s": 0.05}, "max_retries": 3}]
    for n in range(1, 30):
        step = {"id": f"s{n}", "task_type": "test_count", "parameters": {"sleep_s": 0.05}, "max_retries": 3}
        steps.append({**step, "depends_on": [f"s{n - 1}"]})
    workflow_id = client.post("/api/workflows", json={"steps": steps}).json["workflow_id"]
    third = lambda: int(real_redis.get("runs:total") or 0) >= 10  # noqa: E731
    with killed_and_replaced(redis_url, third, "a third of the chain"):

        def ended():
            status = client.get(f"/api/workflows/{workflow_id}").json
            return status if status["state"] in ("SUCCESS", "FAILURE") else None

        done = wait_until(ended, 90, "the workflow to finish after the kill")
    assert done["state"] == "SUCCESS", {k: v["state"] for k, v in done["steps"].items()}
    starts = [done["steps"][f"s{n}"]["started_at"] for n in range(30)]
    assert starts == sorted(starts)  # still in order
