"""core.connection.redis_errors: the one place Redis's exceptions become Taskrelay's."""

from __future__ import annotations

import pytest
import redis

from core.connection import connect, redis_errors
from core.errors import BackendFull, BackendUnavailable, StorageError


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (redis.exceptions.ConnectionError("refused"), BackendUnavailable),
        (redis.exceptions.TimeoutError("timed out"), BackendUnavailable),
        (redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), BackendFull),
        (redis.exceptions.ReadOnlyError("You can't write against a read only replica."), BackendUnavailable),
        (
            redis.exceptions.MasterDownError("Link with MASTER is down and replica-serve-stale-data is set to 'no'."),
            BackendUnavailable,
        ),
        (
            redis.exceptions.ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL"),
            BackendUnavailable,
        ),
        (redis.exceptions.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), StorageError),
    ],
)
def test_each_redis_failure_becomes_one_taskrelay_error(raised, expected):
    with pytest.raises(expected) as caught, redis_errors():
        raise raised
    assert type(caught.value) is expected
    assert caught.value.__cause__ is raised


def test_a_full_redis_is_handled_as_an_outage_and_says_so():
    """Every caller that waits out an outage (the bridge, workers, the API's 503) waits out a full Redis too."""
    with pytest.raises(BackendUnavailable, match="Redis is full"), redis_errors():
        raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")


def test_the_client_retries_a_readonly_reply_as_it_does_a_lost_connection():
    """redis-py reconnects before each retry: after a failover, the retry reaches the new primary
    (tests/integration/test_redis_refusals.py)."""
    client = connect("redis://127.0.0.1:1/0")
    errors = client.connection_pool.connection_kwargs["retry_on_error"]
    assert redis.exceptions.ReadOnlyError in errors
    assert redis.exceptions.MasterDownError in errors
    assert redis.exceptions.ConnectionError in errors
    assert redis.exceptions.TimeoutError not in errors  # the command may have run; and 4 x 10 s is too long
