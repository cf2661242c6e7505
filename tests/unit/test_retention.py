"""History bounded by age and count: KEEP_FINISHED and KEEP_FAILED per queue, and a submit's or task type's own
age (the job's TTL) and count (per task type), oldest first, in the maintenance pass."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from rq.registry import FailedJobRegistry

from core import registry
from core.model import MAX_KEEP_AGE_S, MAX_KEEP_COUNT, Keep, Retention
from core.settings import Settings
from core.storage import keys, retention
from core.storage.queues import SERIALIZER, all_queues, worker_queues
from core.storage.records import fetch_job
from core.storage.retention import COUNT_META, trim
from jobs.batch_worker import BatchWorker
from jobs.heartbeat import HeartbeatSimpleWorker
from tests.helpers import submit


def in_finish_order(fake_redis, registry_key: str, ids: list[str]) -> None:
    """RQ scores registries by expiry in whole seconds; spread the ties so "oldest" is well defined here."""
    fake_redis.zadd(registry_key, {task_id: 4_000_000_000 + n for n, task_id in enumerate(ids)}, xx=True)


def test_trim_deletes_the_oldest_finished_and_failed_beyond_the_counts(client, fake_redis, drain):
    finished = [submit(client) for _ in range(6)]
    failed = [submit(client, "test_bad_input") for _ in range(3)]
    drain()
    in_finish_order(fake_redis, keys.finished_key("normal_priority"), finished)
    in_finish_order(fake_redis, FailedJobRegistry("normal_priority", connection=fake_redis).key, failed)
    assert trim(fake_redis, all_queues(fake_redis), keep_finished=2, keep_failed=2) == 5
    assert [client.get(f"/api/tasks/{i}").status_code for i in finished] == [404] * 4 + [200] * 2
    assert [client.get(f"/api/tasks/{i}").status_code for i in failed] == [404, 200, 200]
    assert fake_redis.zcard(keys.finished_key("normal_priority")) == 2
    assert not any(fake_redis.exists(keys.result_key(i)) for i in finished[:4])  # every key of a trimmed task
    assert trim(fake_redis, all_queues(fake_redis), keep_finished=2, keep_failed=2) == 0


def test_the_maintenance_pass_trims_with_the_worker_settings(client, fake_redis, drain):
    ids = [submit(client) for _ in range(5)]
    drain()
    in_finish_order(fake_redis, keys.finished_key("normal_priority"), ids)
    worker = BatchWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER)
    worker.keep_finished = 1
    worker.run_maintenance_tasks()
    assert [client.get(f"/api/tasks/{i}").status_code for i in ids] == [404] * 4 + [200]


def test_counts_come_from_the_environment():
    settings = Settings.from_env({"KEEP_FINISHED": "500", "KEEP_FAILED": "50"})
    assert (settings.keep_finished, settings.keep_failed) == (500, 50)


# Per task type and per submit: age as each job's TTL, count through the task type's index.

DAY_S = 24 * 3600


def keep_these(params: dict) -> dict:
    """Return what it was given (a throw-away task type with history settings of its own)."""
    return params


@pytest.fixture
def kept_type() -> Iterator[str]:
    """Register `test_kept`: successes kept 1 hour, at most 2 of them; failures as the environment says."""
    registry.task("test_kept", max_retries=0, retention=Retention(success=Keep(age_s=3600, count=2)))(keep_these)
    yield "test_kept"
    registry.unregister("test_kept")


def ttls(connection, task_id: str) -> tuple[int | None, int | None]:
    job = fetch_job(connection, task_id)
    assert job is not None
    return job.result_ttl, job.failure_ttl


def test_a_submit_wins_over_its_task_type_which_wins_over_the_environment(client, fake_redis, kept_type):
    plain = submit(client, "test_echo")
    typed = submit(client, kept_type)
    own = submit(client, kept_type, retention={"success": {"age_seconds": 60}, "failure": {"age_seconds": 120}})
    assert ttls(fake_redis, plain) == (7 * DAY_S, 7 * DAY_S)
    assert ttls(fake_redis, typed) == (3600, 7 * DAY_S)
    assert ttls(fake_redis, own) == (60, 120)
    meta = {i: fetch_job(fake_redis, i).meta for i in (plain, typed, own)}
    assert COUNT_META not in meta[plain]
    assert meta[typed][COUNT_META] == meta[own][COUNT_META] == {"success": 2}  # the type's count: the submit gave none


def test_each_job_keeps_its_own_age_once_it_ended(client, fake_redis, drain):
    short = submit(client, "test_echo", retention={"success": {"age_seconds": 30}})
    failed = submit(client, "test_bad_input", retention={"failure": {"age_seconds": 90}})
    drain()
    assert 0 < fake_redis.ttl(keys.job_key(short)) <= 30
    assert 60 < fake_redis.ttl(keys.job_key(failed)) <= 90
    failed_registry = FailedJobRegistry("normal_priority", connection=fake_redis).key
    assert fake_redis.zscore(failed_registry, failed) == pytest.approx(time.time() + 90, abs=5)


@pytest.mark.parametrize(
    ("retention", "field", "words"),
    [
        ({"success": {"age_seconds": 0}}, "retention.success.age_seconds", "greater than or equal to 1"),
        ({"failure": {"age_seconds": MAX_KEEP_AGE_S + 1}}, "retention.failure.age_seconds", f"{MAX_KEEP_AGE_S}"),
        ({"success": {"count": 0}}, "retention.success.count", "greater than or equal to 1"),
        ({"failure": {"count": MAX_KEEP_COUNT + 1}}, "retention.failure.count", f"{MAX_KEEP_COUNT}"),
        ({"success": {"count": "5"}}, "retention.success.count", "integer"),
        ({"success": {"age": 5}}, "retention.success.age", "unknown field"),
        ({"completed": {"count": 5}}, "retention.completed", "unknown field"),
        ([1], "retention", ""),
    ],
)
def test_bad_retention_is_a_400_naming_the_field_and_the_range(client, retention, field, words):
    body = {"task_type": "test_echo", "retention": retention}
    response = client.post("/api/tasks", json=body)
    assert response.status_code == 400
    named = {f["field"]: f["message"] for f in response.json["fields"]}
    assert field in named, response.json
    assert words in named[field]


def test_a_task_type_with_a_bad_retention_is_refused_at_registration():
    with pytest.raises(ValueError, match=r"retention\.failure\.count must be an integer from 1 to"):
        registry.task("test_never", retention=Retention(failure=Keep(count=0)))(keep_these)
    assert "test_never" not in registry.names()


def test_the_maintenance_pass_keeps_a_task_types_count_oldest_go_first(client, fake_redis, drain, kept_type):
    typed = [submit(client, kept_type) for _ in range(5)]
    others = [submit(client, "test_echo") for _ in range(3)]
    drain()
    worker = BatchWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER)
    worker.run_maintenance_tasks()
    assert [client.get(f"/api/tasks/{i}").status_code for i in typed] == [404] * 3 + [200] * 2
    assert [client.get(f"/api/tasks/{i}").status_code for i in others] == [200] * 3  # no count: the queue's only
    assert not any(fake_redis.zscore(keys.finished_key("normal_priority"), i) for i in typed[:3])
    assert fake_redis.zcard(keys.kept_key("success", kept_type)) == 2


def test_a_submits_count_limits_its_failures_and_the_latest_setting_wins(client, fake_redis, drain):
    failed = [submit(client, "test_bad_input", retention={"failure": {"count": 3}}) for _ in range(4)]
    failed.append(submit(client, "test_bad_input", retention={"failure": {"count": 2}}))
    drain()
    assert trim(fake_redis, all_queues(fake_redis), keep_finished=100, keep_failed=100) == 3
    assert [client.get(f"/api/tasks/{i}").status_code for i in failed] == [404] * 3 + [200] * 2


def test_the_simple_worker_indexes_its_ends_too(client, fake_redis):
    done = [submit(client, "test_echo", retention={"success": {"count": 1}}) for _ in range(2)]
    failed = [submit(client, "test_bad_input", retention={"failure": {"count": 1}}) for _ in range(2)]
    HeartbeatSimpleWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER).work(
        burst=True, logging_level="WARNING"
    )
    assert fake_redis.zcard(keys.kept_key("success", "test_echo")) == 2
    assert fake_redis.zcard(keys.kept_key("failure", "test_bad_input")) == 2
    assert trim(fake_redis, all_queues(fake_redis), keep_finished=100, keep_failed=100) == 2
    assert [client.get(f"/api/tasks/{i}").status_code for i in (*done, *failed)] == [404, 200, 404, 200]


def test_a_task_without_a_count_adds_no_command_and_one_with_a_count_adds_one(client, fake_redis, drain):
    plain = submit(client, "test_echo")
    counted = submit(client, "test_echo", retention={"success": {"count": 10}})
    drain()
    for task_id, commands in ((plain, 0), (counted, 1)):
        job = fetch_job(fake_redis, task_id)
        assert job is not None
        pipe = fake_redis.pipeline(transaction=False)
        retention.note_finished(pipe, job)
        retention.note_ended(pipe, job)
        assert len(pipe.command_stack) == 2 * commands
    assert fake_redis.keys("taskrelay:kept:*") == [keys.kept_key("success", "test_echo").encode()]


def test_a_retried_task_left_in_the_index_is_not_deleted(client, fake_redis, drain):
    failed = [submit(client, "test_bad_input", retention={"failure": {"count": 1}}) for _ in range(2)]
    drain()
    assert client.post(f"/api/tasks/{failed[0]}/retry").status_code == 202  # off the failed registry, queued again
    assert trim(fake_redis, all_queues(fake_redis), keep_finished=100, keep_failed=100) == 0
    assert client.get(f"/api/tasks/{failed[0]}").json["state"] == "RETRY"  # requeued, not deleted
    assert fake_redis.zcard(keys.kept_key("failure", "test_bad_input")) == 1


def test_a_workflow_step_and_each_map_element_keep_their_own_retention(client, fake_redis, drain):
    keep = {"success": {"age_seconds": 45, "count": 7}}
    steps = [
        {"id": "list", "task_type": "test_echo", "parameters": {"items": [1, 2]}, "retention": keep},
        {
            "id": "each",
            "task_type": "test_echo",
            "depends_on": ["list"],
            "parameters": {"n": {"$item": ""}},
            "map": {"$from": "list", "path": "/echo/items"},
            "retention": keep,
        },
    ]
    response = client.post("/api/workflows", json={"steps": steps})
    assert response.status_code == 202, response.json
    drain()
    assert ttls(fake_redis, response.json["steps"]["list"]["task_id"])[0] == 45
    element = fetch_job(fake_redis, f"{response.json['steps']['each']['task_id']}-0")
    assert element is not None, fake_redis.keys("rq:job:*")
    assert (element.result_ttl, element.meta[COUNT_META]) == (45, {"success": 7})


def test_the_task_types_list_shows_each_types_retention(client, kept_type):
    listed = {t["name"]: t["retention"] for t in client.get("/api/task-types").json["task_types"]}
    assert listed[kept_type] == {"success": {"age_seconds": 3600, "count": 2}}
    assert listed["test_echo"] == {}
