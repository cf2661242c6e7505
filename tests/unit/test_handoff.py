"""Enqueues hand queued jobs to idle batch workers (core.storage.handoff), on fakeredis and on the real Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from rq.utils import utcformat
from rq.worker import WorkerStatus

from core.model import TaskRequest
from core.storage import handoff, keys, paused
from core.storage.enqueue import enqueue_batch
from core.storage.queues import SERIALIZER, worker_queues
from jobs.batch_worker import BatchWorker
from tests.helpers import keyed_settings


@pytest.fixture(params=["fakeredis", "redis"])
def connection(request):
    """Both Redis implementations: fakeredis runs the unit suite's workers, the real one runs production."""
    if request.param == "fakeredis":
        return request.getfixturevalue("fake_redis")
    return request.getfixturevalue("real_redis")


def request_for(task_id: str, priority: str = "normal") -> TaskRequest:
    return TaskRequest(task_id, "data_processing", priority, {"data": [1]}, datetime.now(UTC).isoformat())


def enqueue(connection, *requests: TaskRequest) -> list[str]:
    return enqueue_batch(connection, keyed_settings({}), list(requests))


def idle_worker(connection, name: str = "w1") -> BatchWorker:
    """A batch worker registered as idle, with nothing queued."""
    worker = BatchWorker(worker_queues(connection), connection=connection, serializer=SERIALIZER, name=name)
    worker.set_state(WorkerStatus.IDLE)
    worker._claim_batch(register=True)
    assert not worker._batch
    return worker


def test_the_scripts_stamp_is_rqs_utcformat(fake_redis, real_redis):
    stamp = "return utcstamp(tonumber(ARGV[1]), tonumber(ARGV[2]))"
    moments = [0, 951782400, 951868799.5, 1709164800.25, 1767225599.999999, 4102444800.000001, time.time()]
    for connection in (fake_redis, real_redis):
        for moment in moments:
            seconds, micros = divmod(round(moment * 1_000_000), 1_000_000)
            expected = utcformat(datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros))
            assert connection.eval(handoff.FUNCTIONS + stamp, 0, seconds, micros).decode() == expected


def test_an_idle_worker_is_handed_the_job_by_the_enqueue(connection):
    worker = idle_worker(connection)
    assert connection.lrange(handoff.IDLE_KEY, 0, -1) == [b"w1"]
    assert enqueue(connection, request_for("t1")) == ["t1"]

    assert connection.llen(keys.queue_key("normal_priority")) == 0  # claimed by the enqueue for w1
    assert connection.lrange(handoff.IDLE_KEY, 0, -1) == []
    assert not connection.exists(handoff.TICKET_PREFIX + "w1")
    assert connection.hget(keys.job_key("t1"), "status") == b"started"
    assert connection.hget(keys.job_key("t1"), keys.WORKER_FIELD) == b"w1"
    assert connection.hget(worker.key, "state") == b"busy"
    [(member, lapses)] = connection.zrange(keys.started_key("normal_priority"), 0, -1, withscores=True)
    inbox_ttl = connection.ttl(handoff.INBOX_PREFIX + "w1")
    assert 1 <= inbox_ttl <= (lapses - time.time()) / 2 + 1  # the inbox is gone well before the claim lapses

    worker._take(*worker._desk.await_handoff(1.0))
    [(job, queue, held)] = list(worker._batch)
    assert (job.id, queue.name, held.encode()) == ("t1", "normal_priority", member)
    assert job.meta["task_type"] == "data_processing" and list(job.args) == ["data_processing", {"data": [1]}]
    assert worker.get_state() == WorkerStatus.BUSY
    assert not connection.exists(handoff.INBOX_PREFIX + "w1")


def test_a_redelivered_batch_hands_off_its_new_jobs_too(connection):
    enqueue(connection, request_for("old"))
    connection.lpop(keys.queue_key("normal_priority"))  # as if a worker took it
    worker = idle_worker(connection)
    assert enqueue(connection, request_for("old"), request_for("new")) == ["new"]  # the WATCH transaction's way
    _, handed = worker._desk.await_handoff(1.0)
    assert [job_id for _, job_id, _ in handed] == ["new"]


def test_a_hand_off_takes_the_highest_priority_first_and_only_what_the_worker_claims(connection):
    worker = idle_worker(connection)  # a fresh worker claims one job at a time
    enqueue(connection, request_for("low", "low"), request_for("high", "high"), request_for("normal"))
    _, handed = worker._desk.await_handoff(1.0)
    assert [(queue.name, job_id) for queue, job_id, _ in handed] == [("high_priority", "high")]
    assert connection.llen(keys.queue_key("low_priority")) == connection.llen(keys.queue_key("normal_priority")) == 1


def test_one_enqueue_wakes_one_worker_the_most_recently_idle(connection):
    first, second = idle_worker(connection, "w1"), idle_worker(connection, "w2")
    enqueue(connection, request_for("t1"))
    assert second._desk.await_handoff(0.01)[1] and not first._desk.await_handoff(0.01)[1]
    assert connection.lrange(handoff.IDLE_KEY, 0, -1) == [b"w1"]


def test_a_paused_queue_is_not_handed_off(connection):
    paused.pause(connection, "normal_priority")
    worker = idle_worker(connection)
    enqueue(connection, request_for("t1"))
    assert worker._desk.await_handoff(0.01)[1] == []
    assert connection.lrange(keys.queue_key("normal_priority"), 0, -1) == [b"t1"]
    assert connection.lrange(handoff.IDLE_KEY, 0, -1) == [b"w1"]


def test_a_worker_whose_ticket_lapsed_is_dropped_and_gets_nothing(connection):
    worker = idle_worker(connection)
    connection.delete(handoff.TICKET_PREFIX + "w1")  # what IDLE_TICKET_S without a renewal does
    enqueue(connection, request_for("t1"))
    assert worker._desk.await_handoff(0.01)[1] == []
    assert connection.lrange(handoff.IDLE_KEY, 0, -1) == []
    assert connection.lrange(keys.queue_key("normal_priority"), 0, -1) == [b"t1"]


def test_a_worker_that_leaves_gives_what_was_handed_over_back(connection):
    worker = idle_worker(connection)
    enqueue(connection, request_for("t1"), request_for("t2"))
    worker._leave_idle()
    assert connection.lrange(keys.queue_key("normal_priority"), 0, -1) == [b"t1", b"t2"]
    assert connection.hget(keys.job_key("t1"), "status") == b"queued"
    assert connection.zcard(keys.started_key("normal_priority")) == 0
    assert connection.lrange(handoff.IDLE_KEY, 0, -1) == []
    assert not connection.exists(handoff.INBOX_PREFIX + "w1", handoff.TICKET_PREFIX + "w1")


def test_the_idle_call_takes_a_hand_off_that_came_after_the_wait_ended(connection):
    worker = idle_worker(connection)
    enqueue(connection, request_for("t1"))  # handed over while the worker was not blocked on its inbox
    worker._claim_batch(register=True)
    assert [job.id for job, _, _ in worker._batch] == ["t1"]
    assert connection.lrange(handoff.IDLE_KEY, 0, -1) == []


def test_a_workflows_first_step_is_handed_over_too(client, fake_redis):
    # Workflows (and maps, and the steps a success releases) enqueue in a transaction of their own: the hand-off
    # runs there as an EVAL.
    worker = idle_worker(fake_redis)
    steps = [
        {"id": "first", "task_type": "test_echo", "parameters": {}, "depends_on": []},
        {"id": "second", "task_type": "test_echo", "parameters": {}, "depends_on": ["first"]},
    ]
    answer = client.post("/api/workflows", json={"steps": steps})
    assert answer.status_code == 202, answer.json
    _, handed = worker._desk.await_handoff(1.0)
    assert [job_id for _, job_id, _ in handed] == [answer.json["steps"]["first"]["task_id"]]


def test_an_idle_poll_renews_the_ticket_and_claims_what_came_without_a_hand_off(connection):
    worker = idle_worker(connection)
    ticket = connection.lrange(handoff.TICKET_PREFIX + "w1", 0, -1)
    connection.pexpire(handoff.TICKET_PREFIX + "w1", 50)
    worker._claim_batch(register=True)  # the next poll of the same idle spell
    assert connection.lrange(handoff.TICKET_PREFIX + "w1", 0, -1) == ticket  # the same ticket, renewed
    assert connection.pttl(handoff.TICKET_PREFIX + "w1") > 50
    assert connection.lrange(handoff.IDLE_KEY, 0, -1) == [b"w1"]

    connection.delete(handoff.IDLE_KEY)  # as for a push that hands nothing over (RQ's scheduler, a retry)
    enqueue(connection, request_for("t1"))
    connection.lpush(handoff.IDLE_KEY, "w1")
    worker._claim_batch(register=True)  # the poll claims it itself
    assert [job.id for job, _, _ in worker._batch] == ["t1"]
    assert connection.lrange(handoff.IDLE_KEY, 0, -1) == []
    assert not connection.exists(handoff.TICKET_PREFIX + "w1")
