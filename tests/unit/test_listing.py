"""GET /api/tasks: the seed's shape, filters, paging; and POST /api/tasks/purge on fakeredis."""

from __future__ import annotations

import pytest

from tests.helpers import submit


def ids(page):
    return [task["task_id"] for task in page["tasks"]]


def test_list_has_the_seed_shape(client):
    page = client.get("/api/tasks?state=SUCCESS&type=active").json
    assert set(page) >= {"tasks", "total", "filters", "available_filters"}
    assert page["filters"]["state"] == "SUCCESS"
    assert page["filters"]["type"] == "active"
    assert page["available_filters"]["states"] == ["PENDING", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"]
    assert page["available_filters"]["types"] == ["active", "reserved", "scheduled", "completed"]


@pytest.mark.parametrize(
    ("query", "field"),
    [("state=DONE", "state"), ("type=finished", "type"), ("limit=501", "limit"), ("priority=urgent", "priority")],
)
def test_bad_filters_are_400_listing_allowed(client, query, field):
    response = client.get(f"/api/tasks?{query}")
    assert response.status_code == 400
    assert response.json["fields"][0]["field"] == field


def test_unknown_task_type_filter_lists_known(client):
    response = client.get("/api/tasks?task_type=nope")
    assert response.status_code == 400
    assert "data_processing" in response.json["fields"][0]["allowed"]


def test_filters_by_state_type_task_type_and_priority(client, drain):
    done = [submit(client, priority="high") for _ in range(2)]
    failed = submit(client, task_type="test_bad_input", priority="low", parameters={})
    drain()
    queued = submit(client, task_type="test_flaky", priority="low", parameters={"succeed_on": 1})

    assert set(ids(client.get("/api/tasks?state=SUCCESS").json)) == set(done)
    assert ids(client.get("/api/tasks?state=FAILURE").json) == [failed]
    assert ids(client.get("/api/tasks?type=reserved").json) == [queued]
    completed = client.get("/api/tasks?type=completed").json
    assert completed["total"] == 3
    assert set(ids(client.get("/api/tasks?priority=low").json)) == {failed, queued}
    by_type = client.get("/api/tasks?task_type=test_flaky").json
    assert ids(by_type) == [queued] and by_type["total"] == 1
    assert client.get("/api/tasks?state=SUCCESS&priority=low").json["total"] == 0
    assert client.get("/api/tasks?state=success").json["total"] == 2  # case-insensitive


def test_completed_tasks_come_newest_first(client, drain, fake_redis):
    first = submit(client)
    drain()
    second = submit(client)
    drain()
    # RQ scores finished jobs by expiry in whole seconds; spread them as if they ended a second apart.
    expiry = fake_redis.zscore("rq:finished:normal_priority", first)
    fake_redis.zadd("rq:finished:normal_priority", {first: expiry - 1, second: expiry})
    assert ids(client.get("/api/tasks?state=SUCCESS").json) == [second, first]


@pytest.mark.parametrize("task_type_filter", ["", "&task_type=data_processing"])
def test_cursor_pages_cover_everything_once(client, drain, task_type_filter):
    submitted = [submit(client, priority=p) for p in ("high", "normal", "low") for _ in range(5)]
    drain()
    submitted += [submit(client, priority="low") for _ in range(3)]  # queued, a second place
    seen: list[str] = []
    url = f"/api/tasks?limit=4{task_type_filter}"
    page = client.get(url).json
    while True:
        assert page["total"] == 18
        seen += ids(page)
        if not page["next_cursor"]:
            break
        page = client.get(f"{url}&cursor={page['next_cursor']}").json
    assert sorted(seen) == sorted(submitted)


def test_offset_skips_matches(client, drain):
    for _ in range(6):
        submit(client)
    drain()
    everything = ids(client.get("/api/tasks?state=SUCCESS").json)
    assert ids(client.get("/api/tasks?state=SUCCESS&offset=2&limit=3").json) == everything[2:5]
    assert ids(client.get("/api/tasks?task_type=data_processing&offset=4").json) == everything[4:]


def test_malformed_cursor_is_400(client):
    response = client.get("/api/tasks?cursor=garbage")
    assert response.status_code == 400
    assert response.json["fields"][0]["field"] == "cursor"


def test_purge_removes_every_task_key_and_nothing_else(client, drain, fake_redis):
    submit(client)
    submit(client, task_type="test_bad_input", parameters={})
    drain()
    submit(client, priority="low")
    submit(client, delay_seconds=600)
    fake_redis.set("someone:else", "keep")
    fake_redis.rpush("rq:queue:other_app", "their-job")

    answer = client.post("/api/tasks/purge").json
    assert answer["status"] == "success"
    assert answer["message"] == "All task history has been purged"
    details = answer["details"]
    assert details["reserved_tasks_revoked"] == 1
    assert details["scheduled_tasks_revoked"] == 1
    assert details["active_tasks_revoked"] == 0
    assert details["redis_keys_cleared"] > 4

    leftovers = [k.decode() for k in fake_redis.keys("*")]
    ours = [k for k in leftovers if k.startswith(("rq:job:", "rq:results:", "rq:execution", "taskrelay:"))]
    ours += [k for k in leftovers if "_priority" in k]
    assert [k for k in ours if not k.startswith(("taskrelay:apikeys", "taskrelay:metrics:"))] == []
    assert fake_redis.hlen("taskrelay:apikeys") == 1  # a purge drops tasks, never the API keys
    assert fake_redis.exists("taskrelay:metrics:finished")  # nor the counters, which only ever go up
    assert fake_redis.get("someone:else") == b"keep"
    assert fake_redis.lrange("rq:queue:other_app", 0, -1) == [b"their-job"]
    assert client.get("/api/tasks").json["total"] == 0


def test_task_submitted_after_purge_is_kept(client, drain):
    submit(client)
    client.post("/api/tasks/purge")
    kept = submit(client)
    drain()
    assert client.get(f"/api/tasks/{kept}").json["state"] == "SUCCESS"


def test_inspection_budget_gives_short_pages_and_an_upper_bound(client, drain, monkeypatch):
    monkeypatch.setattr("app.listing.MAX_INSPECTED", 4)
    monkeypatch.setattr("app.listing.SCAN_CHUNK", 2)
    wanted = submit(client, task_type="test_flaky", parameters={"succeed_on": 1})
    others = [submit(client) for _ in range(7)]
    drain()
    seen, cursor, pages = [], "", 0
    while True:
        page = client.get(f"/api/tasks?task_type=data_processing&limit=50{cursor}").json
        assert page["total_exact"] is False
        assert page["total"] == 8  # every candidate: an upper bound
        seen += ids(page)
        pages += 1
        if not page["next_cursor"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert pages > 1
    assert sorted(seen) == sorted(others)
    assert wanted not in seen


def test_list_entries_from_hash_fields_match_the_job_objects(client, drain, fake_redis):
    from rq.job import Job

    from app.tasks import summarize, summarize_fields
    from core.storage.keys import SUMMARY_FIELDS
    from core.storage.queues import SERIALIZER

    done = submit(client)
    failed = submit(client, task_type="test_bad_input", parameters={})
    drain()
    waiting = submit(client, priority="high", delay_seconds=60)
    for task_id in (done, failed, waiting):
        job = Job.fetch(task_id, connection=fake_redis, serializer=SERIALIZER)
        values = fake_redis.hmget(Job.key_for(task_id), *SUMMARY_FIELDS)
        assert summarize_fields(task_id, values) == summarize(job)
    assert summarize_fields("gone", [None] * len(SUMMARY_FIELDS)) is None
