"""Read and delete RQ jobs by id, without building Job objects where a few hash fields will do.

The API's status, list and purge go through these; each reads or writes a whole
batch in one pipelined round trip.
"""

from __future__ import annotations

from base64 import b64decode
from collections.abc import Callable, Sequence
from typing import Any

import redis
from redis.client import Pipeline
from rq.exceptions import NoSuchJobError
from rq.job import Job

from core.storage.keys import RESULT_FIELD, WORKER_FIELD, executions_key, job_key, job_keys, result_key
from core.storage.queues import SERIALIZER, JSONJob

DELETE_CHUNK = 1000
"""Jobs deleted per pipelined round trip."""


def fetch_job(connection: redis.Redis, job_id: str) -> Job | None:
    """Return the RQ job `job_id` (JSON-serialized, reading results as JSONJob does), or None when it does not exist."""
    try:
        return JSONJob.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return None


def read_fields(connection: redis.Redis, job_ids: Sequence[str], fields: Sequence[str]) -> list[list[bytes | None]]:
    """Return `fields` of each job hash, in order (all None for a job that does not exist), in one round trip."""
    pipe = connection.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(job_key(job_id), *fields)
    return pipe.execute()


def write_once(connection: redis.Redis, key: str, write: Callable[[Pipeline], object]) -> bool:
    """Run `write`'s commands in one MULTI/EXEC only if `key` does not exist; return whether they ran.

    `key` is WATCHed, so of two callers racing to create it only one writes (the other gets False).
    """
    with connection.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(key)
            if pipe.exists(key):
                return False
            pipe.multi()
            write(pipe)
            pipe.execute()
            return True
        except redis.WatchError:
            return False


def latest_results(connection: redis.Redis, job_ids: Sequence[str]) -> list[Any]:
    """Return each job's latest return value (None where it has none), in one round trip.

    A success the batch worker recorded is in the job hash (RESULT_FIELD, see JSONJob); one RQ's own workers
    recorded is in RQ's results stream, whose `return_value` is RQ's own encoding (base64 of the serializer's
    bytes, rq.results.Result.serialize). tests/unit/test_storage.py compares both with Job.return_value().
    """
    pipe = connection.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(job_key(job_id), "status", RESULT_FIELD)
        pipe.xrevrange(result_key(job_id), count=1)
    replies = pipe.execute()
    values: list[Any] = []
    for (status, stored), entries in zip(replies[::2], replies[1::2], strict=True):
        if stored is not None and status == b"finished":
            values.append(SERIALIZER.loads(stored))
            continue
        encoded = entries[0][1].get(b"return_value") if entries else None
        values.append(SERIALIZER.loads(b64decode(encoded)) if encoded is not None else None)
    return values


def worker_names(connection: redis.Redis, job_ids: Sequence[str]) -> list[str | None]:
    """Return the name of the worker that runs each job (None where no worker took it), in one round trip."""
    names = []
    for (value,) in read_fields(connection, job_ids, (WORKER_FIELD,)):
        names.append(value.decode() if value else None)
    return names


def delete_jobs(
    connection: redis.Redis, job_ids: Sequence[str], also: Callable[[Pipeline, list[str]], Any] | None = None
) -> int:
    """Delete every key of each job (hash, result stream, executions, dependency sets); return how many went.

    `also(pipe, chunk)` may add commands for each chunk of ids to the same pipeline.
    """
    removed = 0
    for start in range(0, len(job_ids), DELETE_CHUNK):
        chunk = list(job_ids[start : start + DELETE_CHUNK])
        pipe = connection.pipeline(transaction=False)
        for job_id in chunk:
            pipe.zrange(executions_key(job_id), 0, -1)
        executions = pipe.execute()
        pipe = connection.pipeline(transaction=False)
        for job_id, execution_ids in zip(chunk, executions, strict=True):
            pipe.delete(*job_keys(job_id, [e.decode() for e in execution_ids]))
        if also is not None:
            also(pipe, chunk)
        removed += sum(r for r in pipe.execute() if isinstance(r, int))
    return removed


def delete_job(connection: redis.Redis, job_id: str) -> int:
    """Delete one job hash and its results stream (a schedule's); return how many keys went."""
    return int(connection.delete(job_key(job_id), result_key(job_id)))
