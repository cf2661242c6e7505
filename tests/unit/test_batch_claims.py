"""How the batch worker sizes its claims and gives lower-priority claims back (fakeredis, no task is run)."""

from __future__ import annotations

from core.storage import keys
from core.storage.enqueue import announce
from core.storage.queues import SERIALIZER, worker_queues
from jobs.batch_worker import BATCH_SIZE, CLAIM_BUDGET_S, BatchWorker
from tests.helpers import submit


def make_worker(fake_redis) -> BatchWorker:
    return BatchWorker(worker_queues(fake_redis), connection=fake_redis, serializer=SERIALIZER)


def observe(worker: BatchWorker, task_type: str, seconds: float, times: int = 30) -> None:
    job = type("Seen", (), {"description": task_type})()
    for _ in range(times):
        worker._observe(job, seconds)


def test_a_fresh_worker_claims_one_then_sizes_claims_from_durations(fake_redis):
    worker = make_worker(fake_redis)
    assert worker.claim_size() == 1
    observe(worker, "fast", 0.0001)
    assert worker.claim_size() == BATCH_SIZE
    observe(worker, "slow", 0.01)
    assert worker.claim_size() in (int(CLAIM_BUDGET_S / 0.01), int(CLAIM_BUDGET_S / 0.01) + 1)  # ~50 ms of 10 ms
    observe(worker, "slower", 0.2)
    assert worker.claim_size() == 1


def test_an_unseen_task_type_is_expected_to_be_slow(fake_redis):
    worker = make_worker(fake_redis)
    observe(worker, "fast", 0.001)
    seen = type("Job", (), {"description": "fast"})()
    unseen = type("Job", (), {"description": "never_run_here"})()
    assert worker._expected_s(seen) < 0.01
    assert worker._expected_s(unseen) == float("inf")


def test_an_announced_higher_task_takes_back_the_unstarted_lower_claims(client, fake_redis):
    lows = [submit(client, priority="low") for _ in range(5)]
    worker = make_worker(fake_redis)
    observe(worker, "data_processing", 0.0001)
    job, queue = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert (job.id, queue.name) == (lows[0], "low_priority")
    assert fake_redis.llen(keys.queue_key("low_priority")) == 0  # all five claimed in one go

    high = submit(client, priority="high")
    worker._on_enqueued({"type": "message", "data": b"high_priority"})  # what the pubsub thread delivers
    job, queue = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert (job.id, queue.name) == (high, "high_priority")
    # The lows came back in their order and were claimed again behind the high one.
    assert [claimed.id for claimed, _, _ in worker._batch] == [high, *lows]


def test_a_batch_emptied_by_giving_claims_back_writes_its_successes_before_idling(client, fake_redis):
    """A success kept for the batch's flush must not wait for the next task when the rest of the batch goes back:
    an idle worker would keep it unwritten until its claim lapsed, and maintenance would run it again."""
    done = submit(client, priority="normal")
    low = submit(client, priority="low")
    worker = make_worker(fake_redis)
    observe(worker, "data_processing", 0.0001)
    job, queue = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert job.id == done and [claimed.id for claimed, _, _ in worker._batch] == [done, low]
    worker.execute_job(job, queue)
    assert fake_redis.hget(keys.job_key(done), "status") == b"started"  # its success waits for the batch's flush
    worker._on_enqueued({"type": "message", "data": b"high_priority"})  # another worker took the high task
    assert worker.dequeue_job_and_maintain_ttl(timeout=1, max_idle_time=0) is None  # the low went back; idle
    assert fake_redis.hget(keys.job_key(done), "status") == b"finished"
    assert fake_redis.lrange(keys.queue_key("low_priority"), 0, -1) == [low.encode()]


def test_a_lower_announcement_changes_nothing(client, fake_redis):
    highs = [submit(client, priority="high") for _ in range(3)]
    worker = make_worker(fake_redis)
    observe(worker, "data_processing", 0.0001)
    worker.dequeue_job_and_maintain_ttl(timeout=1)
    worker._on_enqueued({"type": "message", "data": b"normal_priority"})
    job, _ = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert job.id == highs[0]
    assert [claimed.id for claimed, _, _ in worker._batch] == highs


def test_enqueues_announce_their_highest_queue(fake_redis):
    listener = fake_redis.pubsub()
    listener.subscribe(keys.ENQUEUED_CHANNEL)
    listener.get_message(timeout=1)  # the subscribe confirmation
    announce(fake_redis, ["low", "normal"])
    announce(fake_redis, ["low"])
    announce(fake_redis, ["high", "low"])
    heard = []
    while (message := listener.get_message(timeout=0.2)) is not None:
        heard.append(message["data"])
    assert heard == [b"normal_priority", b"low_priority", b"high_priority"]


def test_an_attempt_is_written_before_an_untimed_task_and_with_a_fast_ones_outcome(client, fake_redis):
    # A type the worker has not timed may run long: its attempt is in Redis before it starts (a kill then counts
    # it). Once timed as fast, the attempt is written with the outcome: one HSET per task less.
    ids = [submit(client, "test_attempt_seen") for _ in range(4)]
    make_worker(fake_redis).work(burst=True, logging_level="WARNING")
    seen = [client.get(f"/api/tasks/{task_id}").json["status"] for task_id in ids]
    assert [status["result"]["attempt"] for status in seen] == [1, 1, 1, 1]
    assert [status["attempts"] for status in seen] == [1, 1, 1, 1]
    assert seen[0]["result"]["stored"] == 1
    assert [status["result"]["stored"] for status in seen[1:]] == [0, 0, 0]
