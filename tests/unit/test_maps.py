"""Map steps on fakeredis with the in-process batch worker: fan-out over a result, order, tolerance, limits."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core import workflow
from core.storage import maps
from core.storage.keys import dependencies_key
from core.storage.places import places_of
from core.storage.queues import get_queue
from tests.helpers import round_trips


def step(step_id: str, task_type: str = "test_echo", parameters: dict | None = None, depends_on=(), **extra) -> dict:
    return {
        "id": step_id,
        "task_type": task_type,
        "parameters": parameters or {},
        "depends_on": list(depends_on),
        **extra,
    }


def run(client, drain, steps: list[dict]) -> dict:
    answer = client.post("/api/workflows", json={"steps": steps})
    assert answer.status_code == 202, answer.json
    drain()
    return client.get(f"/api/workflows/{answer.json['workflow_id']}").json


def rows(values: list) -> dict:
    return step("source", parameters={"rows": values, "label": "L"})


def squares(**map_options) -> dict:
    return step(
        "each",
        "test_echo",
        {"n": {"$item": "/n"}, "label": {"$from": "source", "path": "/echo/label"}},
        ["source"],
        map={"$from": "source", "path": "/echo/rows", **map_options},
    )


def test_a_map_runs_one_task_per_element_and_its_child_gets_the_results_in_order(client, drain):
    done = run(
        client,
        drain,
        [
            rows([{"n": n} for n in range(7)]),
            squares(max_concurrency=2),
            step("after", parameters={"all": {"$from": "each"}}, depends_on=["each"]),
        ],
    )
    assert done["state"] == "SUCCESS", done
    expected = [{"echo": {"n": n, "label": "L"}} for n in range(7)]
    assert done["steps"]["each"]["result"] == expected
    assert done["steps"]["after"]["result"] == {"echo": {"all": expected}}
    assert done["steps"]["each"]["map"] == {"elements": 7, "ended": 7}
    element = client.get(f"/api/tasks/{done['steps']['each']['task_id']}-3").json
    assert element["state"] == "SUCCESS"
    detail = element["status"]
    assert (detail["workflow_id"], detail["step_id"], detail["map_index"]) == (done["workflow_id"], "each", 3)


def test_elements_beyond_max_concurrency_wait_in_lanes(client, fake_redis, settings):
    answer = client.post(
        "/api/workflows", json={"steps": [rows([{"n": n} for n in range(5)]), squares(max_concurrency=2)]}
    )
    task_id = answer.json["steps"]["each"]["task_id"]
    deferred = places_of(get_queue(fake_redis, "normal"))["deferred"]
    assert set(deferred.read(fake_redis, 0, -1)) == {task_id, maps.spawner_id(task_id)}
    meta = {"workflow_id": answer.json["workflow_id"], "step_id": "each", "map_of": task_id}
    entry = {"task_type": "test_echo", "priority": "normal", "max_retries": 0, "max_concurrency": 2}
    assert maps.spawn(fake_redis, settings, meta, entry, [{"n": n} for n in range(5)])
    assert not maps.spawn(fake_redis, settings, meta, entry, [{"n": n} for n in range(5)])  # a re-run adds nothing
    queued = [i.decode() for i in fake_redis.lrange("rq:queue:normal_priority", 0, -1)]
    assert queued[-2:] == [f"{task_id}-0", f"{task_id}-1"]
    for index in (2, 3, 4):
        assert fake_redis.smembers(dependencies_key(f"{task_id}-{index}")) == {f"{task_id}-{index - 2}".encode()}
    assert {f"{task_id}-{i}" for i in (2, 3, 4)} <= set(deferred.read(fake_redis, 0, -1))


def test_an_empty_list_gives_an_empty_result(client, drain):
    done = run(client, drain, [rows([]), squares()])
    assert done["state"] == "SUCCESS"
    assert done["steps"]["each"]["result"] == []


@pytest.mark.parametrize(
    ("options", "state"),
    [
        ({}, "FAILURE"),
        ({"tolerated_failures": 2}, "FAILURE"),
        ({"tolerated_failures": 3}, "SUCCESS"),
        ({"tolerated_failure_percent": 30}, "SUCCESS"),
        ({"tolerated_failure_percent": 29}, "FAILURE"),
    ],
)
def test_failure_tolerance_counts_failed_elements(client, drain, options, state):
    values = [{"value": n, "fail": n in (1, 4, 8)} for n in range(10)]
    mapped = step(
        "each",
        "test_fail_if",
        {"value": {"$item": "/value"}, "fail": {"$item": "/fail"}},
        ["source"],
        map={"$from": "source", "path": "/echo/rows", **options},
    )
    done = run(client, drain, [rows(values), mapped, step("after", depends_on=["each"])])
    assert done["steps"]["each"]["state"] == state, done["steps"]["each"]
    if state == "SUCCESS":
        result = done["steps"]["each"]["result"]
        assert [r.get("value") for r in result] == [None if n in (1, 4, 8) else n for n in range(10)]
        assert result[4]["error"]["type"] == "TaskInputError" and "told to fail" in result[4]["error"]["message"]
        assert done["steps"]["after"]["state"] == "SUCCESS"
    else:
        message = done["steps"]["each"]["error"]["message"]
        assert message.startswith("3 of 10 elements failed (tolerated: ")
        assert "element 1: TaskInputError" in message
        assert done["steps"]["after"]["state"] == "REVOKED"
        assert done["state"] == "FAILURE"


@pytest.mark.parametrize(
    ("source", "path", "words"),
    [
        ({"rows": 5}, "/echo/rows", "is a int, not a list"),
        ({"other": []}, "/echo/rows", "path '/echo/rows': the result has no 'rows'"),
    ],
)
def test_no_list_fails_the_map_step_naming_the_reference(client, drain, source, path, words):
    mapped = step("each", "test_echo", {"n": {"$item": ""}}, ["source"], map={"$from": "source", "path": path})
    done = run(client, drain, [step("source", parameters=source), mapped, step("after", depends_on=["each"])])
    assert done["steps"]["each"]["state"] == "FAILURE"
    assert words in done["steps"]["each"]["error"]["message"]
    assert done["steps"]["after"]["state"] == "REVOKED"
    assert done["state"] == "FAILURE"


def test_a_list_over_the_limit_fails_the_step(client, drain, monkeypatch):
    monkeypatch.setattr(workflow, "MAX_MAP_ITEMS", 3)
    done = run(client, drain, [rows([{"n": n} for n in range(4)]), squares()])
    assert done["steps"]["each"]["state"] == "FAILURE"
    assert "4 elements, over the limit of 3" in done["steps"]["each"]["error"]["message"]


def test_an_element_that_fails_its_parameters_model_is_a_failed_element(client, drain):
    mapped = step(
        "each", "data_processing", {"data": {"$item": "/n"}}, ["source"], map={"$from": "source", "path": "/echo/rows"}
    )
    done = run(client, drain, [rows([{"n": [1]}, {"n": 5}]), mapped])
    assert done["steps"]["each"]["state"] == "FAILURE"
    assert "1 of 2 elements failed" in done["steps"]["each"]["error"]["message"]


@pytest.mark.parametrize(
    ("bad", "field", "words"),
    [
        (
            step("x", parameters={"n": {"$item": ""}}, depends_on=["source"]),
            "steps[1].parameters",
            "only allowed in a step with a map",
        ),
        (step("x", depends_on=[], map={"$from": "source"}), "steps[1].map", "not an ancestor"),
        (step("x", depends_on=["source"], map={"$from": "source", "path": "rows"}), "steps[1].map", "JSON Pointer"),
        (
            step("x", depends_on=["source"], map={"$from": "source", "max_concurrency": 0}),
            "steps.1.map.max_concurrency",
            "",
        ),
        (step("x", depends_on=["source"], map={"$from": "source", "fan": 1}), "steps.1.map.fan", ""),
    ],
)
def test_bad_maps_are_400s_naming_the_field(client, bad, field, words):
    answer = client.post("/api/workflows", json={"steps": [rows([1]), bad]})
    assert answer.status_code == 400, answer.json
    assert field in [f["field"] for f in answer.json["fields"]], answer.json
    assert words in answer.json["message"]


def test_maintenance_releases_a_map_whose_last_end_was_lost(client, drain, fake_redis, monkeypatch):
    real_ended = maps.ended_on
    monkeypatch.setattr(maps, "ended_on", lambda *args, **kwargs: None)
    answer = client.post("/api/workflows", json={"steps": [rows([{"n": 1}, {"n": 2}]), squares()]}).json
    drain()
    task_id = answer["steps"]["each"]["task_id"]
    assert client.get(f"/api/workflows/{answer['workflow_id']}").json["steps"]["each"]["state"] == "PENDING"
    monkeypatch.setattr(maps, "ended_on", real_ended)
    assert maps.repair(fake_redis, task_id, 60)
    drain()
    assert client.get(f"/api/workflows/{answer['workflow_id']}").json["state"] == "SUCCESS"


def test_the_readme_map_example_runs(client, drain):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("#### Map: one task per element") :]
    body = json.loads(re.search(r"-d '(\{.*?\})'", section, re.S).group(1))
    done = run(client, drain, body["steps"])
    assert done["state"] == "SUCCESS", done
    assert [row["result"]["sum"] for row in done["steps"]["report"]["result"]["result"]] == [3, 12, 6]


def test_canceling_a_workflow_cancels_a_big_maps_waiting_elements_together(client, drain, fake_redis):
    from rq.job import Job

    from core.storage.paused import pause
    from core.storage.queues import SERIALIZER

    total = 300
    source = step("source", parameters={"rows": list(range(total))}, priority="high")
    each = step(
        "each",
        "test_echo",
        {"n": {"$item": ""}},
        ["source"],
        priority="low",
        map={"$from": "source", "path": "/echo/rows", "max_concurrency": 10},
    )
    answer = client.post("/api/workflows", json={"steps": [source, each]})
    assert answer.status_code == 202, answer.json
    workflow_id, map_id = answer.json["workflow_id"], answer.json["steps"]["each"]["task_id"]
    pause(fake_redis, get_queue(fake_redis, "low").name)
    drain()  # the source runs; the map's spawner waits in the paused low queue
    Job.fetch(maps.spawner_id(map_id), connection=fake_redis, serializer=SERIALIZER).perform()  # spawns them
    low = places_of(get_queue(fake_redis, "low"))
    assert (fake_redis.llen(low["queued"].key), fake_redis.zcard(low["deferred"].key)) == (11, total - 10 + 1)
    sent = round_trips(fake_redis)
    canceled = client.post(f"/api/workflows/{workflow_id}/cancel")
    assert canceled.status_code == 200, canceled.json
    assert len(sent) < 40, sent  # was ~2 per element: the waiting ones go together, a pipeline per 500
    states = [fake_redis.hget(f"rq:job:{maps.element_id(map_id, n)}", "status") for n in range(total)]
    assert set(states) == {b"canceled"}
    assert fake_redis.llen(low["queued"].key) == 0 and fake_redis.zcard(low["deferred"].key) == 0
    assert client.get(f"/api/workflows/{workflow_id}").json["state"] == "REVOKED"
