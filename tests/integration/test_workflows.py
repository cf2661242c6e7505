"""Workflows on the real Redis with worker processes of each class: results flow, fan-in waits, failures cascade."""

from __future__ import annotations

import time

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


def _ended(client, workflow_id: str, states=("SUCCESS", "FAILURE", "REVOKED")):
    def check():
        status = client.get(f"/api/workflows/{workflow_id}").json
        return status if status["state"] in states else None

    return check


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_map_fans_out_in_lanes_and_fans_in_in_order(redis_url, real_redis, worker_class):
    client = create_app(keyed_settings({"REDIS_URL": redis_url}), real_redis).test_client()
    total, lanes = 40, 3
    steps = [
        {"id": "source", "task_type": "test_echo", "parameters": {"rows": list(range(total))}},
        {
            "id": "each",
            "task_type": "test_sum",
            "parameters": {"values": [{"$item": ""}, {"$item": ""}]},
            "depends_on": ["source"],
            "map": {"$from": "source", "path": "/echo/rows", "max_concurrency": lanes},
        },
        {"id": "join", "task_type": "test_echo", "parameters": {"all": {"$from": "each"}}, "depends_on": ["each"]},
    ]
    answer = client.post("/api/workflows", json={"steps": steps})
    assert answer.status_code == 202, answer.json
    workflow_id, map_id = answer.json["workflow_id"], answer.json["steps"]["each"]["task_id"]
    workers = [spawn_worker(redis_url, WORKER_CLASS=worker_class) for _ in range(2)]
    try:
        done = wait_until(_ended(client, workflow_id), 90, "the map workflow to end")
    finally:
        for worker in workers:
            stop_worker(worker, kill=True)
    assert done["state"] == "SUCCESS", {k: (v["state"], v.get("error")) for k, v in done["steps"].items()}
    expected = [{"sum": 2 * n, "count": 2} for n in range(total)]
    assert done["steps"]["each"]["result"] == expected
    assert done["steps"]["join"]["result"] == {"echo": {"all": expected}}
    assert done["steps"]["each"]["map"] == {"elements": total, "ended": total}
    elements = [client.get(f"/api/tasks/{map_id}-{n}").json["status"] for n in range(total)]
    for n in range(lanes, total):  # element n starts only after element n - lanes ended
        assert elements[n]["started_at"] >= elements[n - lanes]["ended_at"], n
    assert done["steps"]["join"]["started_at"] >= max(e["ended_at"] for e in elements)


def test_canceling_a_workflow_mid_map_revokes_every_element(redis_url, real_redis):
    client = create_app(keyed_settings({"REDIS_URL": redis_url}), real_redis).test_client()
    steps = [
        {"id": "source", "task_type": "test_echo", "parameters": {"rows": list(range(20))}},
        {
            "id": "each",
            "task_type": "test_hold",
            "parameters": {"release_key": "never-set", "max_s": 30},
            "depends_on": ["source"],
            "map": {"$from": "source", "path": "/echo/rows", "max_concurrency": 4},
        },
        {"id": "after", "task_type": "test_echo", "depends_on": ["each"]},
    ]
    answer = client.post("/api/workflows", json={"steps": steps}).json
    workflow_id, map_id = answer["workflow_id"], answer["steps"]["each"]["task_id"]
    workers = [spawn_worker(redis_url) for _ in range(2)]
    try:

        def running():
            states = [client.get(f"/api/tasks/{map_id}-{n}") for n in range(4)]
            return any(s.status_code == 200 and s.json["status"]["attempts"] for s in states)

        wait_until(running, 30, "an element running")
        started = time.monotonic()
        canceled = client.post(f"/api/workflows/{workflow_id}/cancel")
        assert canceled.status_code == 200, canceled.json
        assert time.monotonic() - started < 10
        done = wait_until(_ended(client, workflow_id, ("REVOKED",)), 20, "the workflow to be revoked")
        elements = [client.get(f"/api/tasks/{map_id}-{n}").json["state"] for n in range(20)]
    finally:
        for worker in workers:
            stop_worker(worker, kill=True)
    assert set(elements) == {"REVOKED"}, elements
    assert {done["steps"][s]["state"] for s in ("each", "after")} == {"REVOKED"}
    assert real_redis.llen("rq:queue:normal_priority") == 0
    assert real_redis.zcard("rq:deferred:normal_priority") == 0


def test_a_worker_killed_mid_map_loses_no_element(redis_url, real_redis):
    client = create_app(keyed_settings({"REDIS_URL": redis_url, "RETRY_BASE_S": "0"}), real_redis).test_client()
    total = 120
    steps = [
        {"id": "source", "task_type": "test_echo", "parameters": {"rows": list(range(total))}},
        {
            "id": "each",
            "task_type": "test_count",
            "parameters": {"sleep_s": 0.01, "n": {"$item": ""}},
            "depends_on": ["source"],
            "max_retries": 3,
            "map": {"$from": "source", "path": "/echo/rows"},
        },
    ]
    workflow_id = client.post("/api/workflows", json={"steps": steps}).json["workflow_id"]
    a_third = lambda: int(real_redis.get("runs:total") or 0) >= total // 3  # noqa: E731
    with killed_and_replaced(redis_url, a_third, "a third of the map", RETRY_BASE_S="0"):  # elements spawn there
        done = wait_until(_ended(client, workflow_id), 90, "the map to finish after the kill")
    assert done["state"] == "SUCCESS", done["steps"]["each"]
    assert len(done["steps"]["each"]["result"]) == total
    assert all(result["run"] >= 1 for result in done["steps"]["each"]["result"])
