"""History bounded by count: KEEP_FINISHED and KEEP_FAILED per queue, oldest first, in the maintenance pass."""

from __future__ import annotations

from rq.registry import FailedJobRegistry

from core.settings import Settings
from core.storage import keys
from core.storage.queues import SERIALIZER, all_queues, worker_queues
from core.storage.retention import trim
from jobs.batch_worker import BatchWorker
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
