"""Workflows on fakeredis with the in-process batch worker: checks at submit, results passed, failure cascade."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from core.storage.places import places_of
from core.storage.queues import get_queue
from tests.helpers import round_trips


def post(client, steps: list[dict], **extra):
    return client.post("/api/workflows", json={"steps": steps, **extra})


def step(step_id: str, task_type: str = "test_echo", parameters: dict | None = None, depends_on=(), **extra) -> dict:
    body = {"id": step_id, "task_type": task_type, "parameters": parameters or {}, "depends_on": list(depends_on)}
    return {**body, **extra}


def run(client, drain, steps: list[dict], **extra) -> dict:
    answer = post(client, steps, **extra)
    assert answer.status_code == 202, answer.json
    drain()
    return client.get(f"/api/workflows/{answer.json['workflow_id']}").json


def test_a_chain_passes_each_result_to_the_next(client, drain):
    done = run(
        client,
        drain,
        [
            step("numbers", parameters={"rows": [1, 2, 3]}),
            step("total", "test_sum", {"values": {"$from": "numbers", "path": "/echo/rows"}}, ["numbers"]),
            step("report", parameters={"sum": {"$from": "total", "path": "/sum"}}, depends_on=["total"]),
        ],
        name="chain",
    )
    assert done["state"] == "SUCCESS" and done["name"] == "chain"
    assert done["progress"] == {"done": 3, "total": 3, "percent": 100.0}
    assert done["steps"]["total"]["result"] == {"sum": 6, "count": 3}
    assert done["steps"]["report"]["result"] == {"echo": {"sum": 6}}
    assert done["steps"]["report"]["depends_on"] == ["total"]


def test_fan_out_and_fan_in(client, drain):
    parts = [step(f"part{n}", parameters={"n": [n, n]}) for n in range(5)]
    values = [{"$from": f"part{n}", "path": "/echo/n"} for n in range(5)]
    done = run(client, drain, [*parts, step("join", "test_sum", {"values": values}, [p["id"] for p in parts])])
    assert done["state"] == "SUCCESS"
    assert done["steps"]["join"]["result"] == {"sum": 20, "count": 10}


def test_waiting_steps_sit_in_rqs_deferred_registry(client, fake_redis):
    answer = post(client, [step("a"), step("b", depends_on=["a"])]).json
    deferred = places_of(get_queue(fake_redis, "normal"))["deferred"].read(fake_redis, 0, -1)
    assert deferred == [answer["steps"]["b"]["task_id"]]
    status = client.get(f"/api/tasks/{answer['steps']['b']['task_id']}").json
    assert status["state"] == "PENDING" and status["status"]["workflow_id"] == answer["workflow_id"]
    assert client.get(f"/api/workflows/{answer['workflow_id']}").json["state"] == "PENDING"


def test_a_failed_step_cancels_what_waits_on_it_and_the_workflow_fails(client, drain):
    done = run(
        client,
        drain,
        [
            step("ok"),
            step("bad", "test_bad_input", depends_on=["ok"]),
            step("after", depends_on=["bad"]),
            step("last", depends_on=["after", "ok"]),
            step("aside", depends_on=["ok"]),
        ],
    )
    states = {step_id: entry["state"] for step_id, entry in done["steps"].items()}
    assert states == {"ok": "SUCCESS", "bad": "FAILURE", "after": "REVOKED", "last": "REVOKED", "aside": "SUCCESS"}
    assert done["state"] == "FAILURE"


def test_a_reference_to_a_missing_path_fails_that_step_naming_it(client, drain):
    missing = {"x": {"$from": "a", "path": "/nope"}}
    done = run(client, drain, [step("a"), step("b", parameters=missing, depends_on=["a"])])
    assert done["steps"]["b"]["state"] == "FAILURE"
    message = done["steps"]["b"]["error"]["message"]
    assert "'nope'" in message and "$from 'a'" in message


def test_canceling_a_workflow_revokes_every_unfinished_step(client, drain):
    answer = post(client, [step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"])]).json
    canceled = client.post(f"/api/workflows/{answer['workflow_id']}/cancel").json
    assert canceled["state"] == "REVOKED" and sorted(canceled["revoked_steps"]) == ["a", "b", "c"]
    drain()
    done = client.get(f"/api/workflows/{answer['workflow_id']}").json
    assert done["state"] == "REVOKED"
    assert {entry["state"] for entry in done["steps"].values()} == {"REVOKED"}


def test_canceling_one_step_cancels_its_descendants(client, drain):
    answer = post(client, [step("a"), step("b", depends_on=["a"]), step("c", depends_on=["b"])]).json
    assert client.post(f"/api/tasks/{answer['steps']['a']['task_id']}/cancel").status_code == 200
    drain()
    done = client.get(f"/api/workflows/{answer['workflow_id']}").json
    assert {entry["state"] for entry in done["steps"].values()} == {"REVOKED"} and done["state"] == "FAILURE"


@pytest.mark.parametrize(
    ("steps", "field", "words"),
    [
        ([step("a"), step("a")], "steps[1].id", "duplicate step id 'a'"),
        ([step("a", depends_on=["zz"])], "steps[0].depends_on", "unknown step 'zz'"),
        ([step("a", depends_on=["b"]), step("b", depends_on=["a"])], "steps", "cycle: "),
        ([step("a", depends_on=["a"])], "steps[0].depends_on", "depends on itself"),
        ([step("a"), step("b", parameters={"x": {"$from": "a"}})], "steps[1].parameters", "not an ancestor"),
        ([step("a", "no_such_type")], "steps[0].task_type", "no_such_type"),
        ([step("a", "data_processing", {"data": 5})], "steps[0].parameters.data", ""),
        (
            [step("a"), step("b", parameters={"x": {"$from": "a", "path": "rows"}}, depends_on=["a"])],
            "steps[1]",
            "Pointer",
        ),
    ],
    ids=["duplicate", "unknown-parent", "cycle", "self", "not-ancestor", "task-type", "parameters", "pointer"],
)
def test_bad_workflows_are_400s_naming_the_step_and_field(client, fake_redis, steps, field, words):
    answer = post(client, steps)
    assert answer.status_code == 400, answer.json
    assert any(f["field"].startswith(field) for f in answer.json["fields"]), answer.json
    assert words in answer.json["message"]
    assert fake_redis.keys("rq:job:*") == []  # nothing was created


def test_a_cycle_is_named(client):
    answer = post(client, [step("a", depends_on=["c"]), step("b", depends_on=["a"]), step("c", depends_on=["b"])])
    message = answer.json["message"]
    assert message.startswith("steps: cycle: ") and all(name in message for name in ("a", "b", "c"))


def test_over_the_step_limit_is_a_400(client):
    answer = post(client, [step(f"s{n}") for n in range(2001)])
    assert answer.status_code == 400 and any(f["field"].startswith("steps") for f in answer.json["fields"])


def test_unknown_workflow_is_404_and_the_list_shows_workflows(client, drain):
    assert client.get("/api/workflows/nope").status_code == 404
    assert client.post("/api/workflows/nope/cancel").status_code == 404
    run(client, drain, [step("a")], name="one")
    listed = client.get("/api/workflows").json
    assert listed["total"] == 1 and listed["workflows"][0]["name"] == "one"
    assert listed["workflows"][0]["state"] == "SUCCESS"


def test_purge_removes_workflows_and_counts_them(client, drain, fake_redis):
    answer = post(client, [step("a"), step("b", depends_on=["a"])]).json
    run(client, drain, [step("x")])
    details = client.post("/api/tasks/purge").json["details"]
    assert details["workflows_cleared"] == 2
    assert client.get(f"/api/workflows/{answer['workflow_id']}").status_code == 404
    assert [k for k in fake_redis.keys("*") if k.startswith((b"taskrelay:workflow", b"rq:job:"))] == []


def test_the_readme_example_runs(client, drain):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Workflows") :]
    body = json.loads(re.search(r"-d '(\{.*?\})'", section, re.S).group(1))
    answer = client.post("/api/workflows", json=body)
    assert answer.status_code == 202, answer.json
    drain()
    done = client.get(f"/api/workflows/{answer.json['workflow_id']}").json
    assert done["state"] == "SUCCESS", done
    assert done["steps"]["totals"]["result"]["data"]["data"] == [
        {"count": 2, "sum": 7, "mean": 3.5, "min": 3, "max": 4}
    ]


def test_maintenance_releases_a_step_whose_release_was_lost(client, drain, fake_redis, monkeypatch):
    from core.storage import workflows
    from core.storage.queues import SERIALIZER, worker_queues
    from jobs.batch_worker import BatchWorker

    answer = post(client, [step("a"), step("b", depends_on=["a"])]).json
    with monkeypatch.context() as patched:  # the worker dies between writing a's success and releasing b
        patched.setattr(workflows, "release_on", lambda pipe, job: None)
        drain()
    status = client.get(f"/api/workflows/{answer['workflow_id']}").json
    assert status["steps"]["a"]["state"] == "SUCCESS" and status["steps"]["b"]["state"] == "PENDING"
    BatchWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER).run_maintenance_tasks()
    drain()
    assert client.get(f"/api/workflows/{answer['workflow_id']}").json["state"] == "SUCCESS"


def test_allow_failure_runs_the_step_anyway_with_the_parents_error(client, drain):
    done = run(
        client,
        drain,
        [
            step("bad", "test_bad_input"),
            step(
                "tolerant",
                parameters={"got": {"$from": "bad", "path": "/x"}},
                depends_on=["bad"],
                allow_failure=["bad"],
            ),
            step("after", depends_on=["tolerant"]),
        ],
    )
    states = {step_id: entry["state"] for step_id, entry in done["steps"].items()}
    assert states == {"bad": "FAILURE", "tolerant": "SUCCESS", "after": "SUCCESS"}
    got = done["steps"]["tolerant"]["result"]["echo"]["got"]
    assert got == {"error": {"type": "TaskInputError", "message": "value must be positive"}}
    assert done["state"] == "SUCCESS"  # the one failure was tolerated by every step that waited on it


def test_allow_failure_spares_only_the_tolerant_branch(client, drain):
    done = run(
        client,
        drain,
        [
            step("ok"),
            step("bad", "test_bad_input"),
            step("tolerant", depends_on=["ok", "bad"], allow_failure=["bad"]),
            step("strict", depends_on=["bad"]),
        ],
    )
    states = {step_id: entry["state"] for step_id, entry in done["steps"].items()}
    assert states == {"ok": "SUCCESS", "bad": "FAILURE", "tolerant": "SUCCESS", "strict": "REVOKED"}
    assert done["state"] == "FAILURE"


def test_allow_failure_must_name_a_parent(client):
    answer = post(client, [step("a"), step("b", depends_on=["a"], allow_failure=["zz"])])
    assert answer.status_code == 400 and answer.json["fields"][0]["field"] == "steps[1].allow_failure"


def test_on_failure_runs_once_with_the_failed_steps_error(client, drain):
    handler = {"task_type": "test_echo", "parameters": {"alert": "ops"}}
    steps = [step("a", "test_bad_input"), step("b", "test_bad_input"), step("c", depends_on=["a"])]
    done = run(client, drain, steps, on_failure=handler)
    assert done["state"] == "FAILURE" and done["on_failure"]["state"] == "SUCCESS"
    result = client.get(f"/api/tasks/{done['on_failure']['task_id']}").json["status"]["result"]["echo"]
    assert result["alert"] == "ops"
    failure = result["failure"]
    assert failure["workflow_id"] == done["workflow_id"] and failure["step_id"] in ("a", "b")
    assert failure["error"] == {"type": "TaskInputError", "message": "value must be positive"}
    assert failure["task_id"] == done["steps"][failure["step_id"]]["task_id"]
    # two steps failed: the handler still ran once (its task id is fixed at submit)
    assert client.get(f"/api/tasks/{done['on_failure']['task_id']}").json["status"]["attempts"] == 1


def test_on_failure_is_not_run_when_nothing_fails(client, drain):
    done = run(client, drain, [step("a")], on_failure={"task_type": "test_echo"})
    assert done["state"] == "SUCCESS" and done["on_failure"]["state"] is None
    assert post(client, [step("a")], on_failure={"task_type": "nope"}).json["fields"][0]["field"] == (
        "on_failure.task_type"
    )


def test_the_workflow_list_filters_by_state(client, drain):
    run(client, drain, [step("a")], name="fine")
    run(client, drain, [step("a", "test_bad_input")], name="broken")
    failed = client.get("/api/workflows?state=failure").json
    assert [w["name"] for w in failed["workflows"]] == ["broken"] and failed["total"] == 1
    assert client.get("/api/workflows?state=SUCCESS").json["workflows"][0]["name"] == "fine"
    bad = client.get("/api/workflows?state=DONE")
    assert bad.status_code == 400 and bad.json["fields"][0]["field"] == "state"


def test_canceling_a_wide_workflow_cancels_its_steps_together(client, fake_redis):
    fan = [step(f"s{n}") for n in range(200)] + [step("join", depends_on=[f"s{n}" for n in range(200)])]
    answer = post(client, fan).json
    sent = round_trips(fake_redis)
    canceled = client.post(f"/api/workflows/{answer['workflow_id']}/cancel").json
    assert len(canceled["revoked_steps"]) == 201
    assert len(sent) < 30, sent  # was two round trips per step
    assert fake_redis.llen("rq:queue:normal_priority") == 0


def test_the_list_reads_workflows_a_chunk_at_a_time_and_agrees_with_each_status(client, drain, fake_redis, monkeypatch):
    from app import prometheus
    from app import workflows as api_workflows
    from core.storage import workflows as stored

    monkeypatch.setattr(api_workflows, "LISTED_PER_ROUND", 3)  # 8 workflows: three rounds, one short
    for i in range(3):
        run(client, drain, [step("a"), step("b", depends_on=["a"])], name=f"ok{i}")
    run(client, drain, [step("a", "test_bad_input")], name="broken")
    waiting = [post(client, [step("a"), step("b", depends_on=["a"])], name=f"queued{i}").json for i in range(2)]
    canceled = post(client, [step("a")], name="canceled").json
    assert client.post(f"/api/workflows/{canceled['workflow_id']}/cancel").status_code == 200
    gone = post(client, [step("a")], name="expired").json
    fake_redis.delete(stored.workflow_key(gone["workflow_id"]))  # its document expired; the index still names it
    # one still in the RabbitMQ ingress: only its accepted record exists
    document = json.loads(fake_redis.get(stored.workflow_key(waiting[1]["workflow_id"])))
    fake_redis.delete(stored.workflow_key(waiting[1]["workflow_id"]))
    fake_redis.set(stored.accepted_key(waiting[1]["workflow_id"]), json.dumps(document))

    ids = stored.list_ids(fake_redis, 0, -1)
    sent = round_trips(fake_redis)
    entries = api_workflows.listed(fake_redis, ids)
    assert len(ids) == 8 and len(sent) <= 3 * 3, sent  # documents (+ accepted records) and step fields, per round
    assert [e["workflow_id"] for e in entries] == [i for i in ids if i != gone["workflow_id"]]
    for entry in entries:
        whole = client.get(f"/api/workflows/{entry['workflow_id']}").json
        assert entry == {key: whole[key] for key in entry}
    states = [e["state"] for e in entries]
    assert sorted(states) == ["FAILURE", "PENDING", "PENDING", "REVOKED", "SUCCESS", "SUCCESS", "SUCCESS"]
    assert prometheus.workflow_states(fake_redis) == {"SUCCESS": 3, "FAILURE": 1, "PENDING": 2, "REVOKED": 1}
    newest = [e["state"] for e in entries if e["workflow_id"] in ids[:5]]
    assert prometheus.workflow_states(fake_redis, limit=5) == dict(Counter(newest))
    page = client.get("/api/workflows?state=pending&limit=1&offset=1").json
    assert page["total"] == 2 and [w["name"] for w in page["workflows"]] == ["queued0"]
