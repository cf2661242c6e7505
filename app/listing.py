"""List tasks by reading RQ's queues and registries, never by scanning keys.

Each priority queue has seven places a job can be (its list, and the started,
deferred, scheduled, finished, failed and canceled registries). A filter picks
the places that can hold matching jobs; one pipelined LLEN/ZCARD round trip
sizes them, pages are cut with LRANGE/ZRANGE, and only when a filter cannot be
answered by the place alone (task_type, or PENDING vs RETRY) are job hashes
read, in pipelined chunks, at most MAX_INSPECTED per request: past that the
page may come back short with a next_cursor to continue from, and `total` is
an upper bound (`total_exact: false`). Finished and failed tasks come newest first.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from app.errors import InvalidRequest
from app.schemas import MAX_OFFSET, ListQuery
from app.states import LIST_TYPES, STATES, state_of
from app.tasks import accepted_summary, summarize_fields
from core import accepted, registry
from core.connection import redis_errors
from core.model import PRIORITIES
from core.storage import places as storage
from core.storage.keys import FILTER_FIELDS, SUMMARY_FIELDS
from core.storage.queues import Queue, get_queue
from core.storage.records import read_fields

SCAN_CHUNK = 500
"""Job hashes read per pipelined round trip when a filter needs them."""
MAX_INSPECTED = 20_000
"""Most job hashes one request reads for a filter; past it the page ends early and `total` is an upper bound."""


@dataclass(frozen=True)
class Place:
    """One place a queue keeps task ids, as the list endpoint sees it: a list type and the states found there."""

    where: storage.Place
    list_type: str
    states: frozenset[str]
    newest_first: bool = False
    accepted: bool = False
    """Ids of tasks still in the RabbitMQ ingress: their record is a pending hash, not a job."""

    @property
    def key(self) -> str:
        return self.where.key

    def read(self, connection: redis.Redis, start: int, stop: int) -> list[str]:
        """Return the task ids at positions start..stop (inclusive)."""
        return self.where.read(connection, start, stop, newest_first=self.newest_first)


def places_of(queue: Queue) -> list[Place]:
    """Return every place `queue` keeps task ids, grouped by list type in LIST_TYPES order."""
    waiting = frozenset({"PENDING", "RETRY"})
    rq = storage.places_of(queue)
    ingress = storage.Place(accepted.zset_key(queue.name), "accepted")
    return [
        Place(rq["started"], "active", frozenset({"STARTED"})),
        Place(rq["queued"], "reserved", waiting),
        Place(rq["deferred"], "reserved", frozenset({"PENDING"})),
        Place(ingress, "reserved", frozenset({"PENDING"}), accepted=True),
        Place(rq["scheduled"], "scheduled", waiting),
        Place(rq["finished"], "completed", frozenset({"SUCCESS"}), newest_first=True),
        Place(rq["failed"], "completed", frozenset({"FAILURE"}), newest_first=True),
        Place(rq["canceled"], "completed", frozenset({"REVOKED"}), newest_first=True),
    ]


def _select(connection: redis.Redis, query: ListQuery) -> list[Place]:
    priorities = [query.priority.value] if query.priority else list(PRIORITIES)
    by_queue = [places_of(get_queue(connection, p)) for p in priorities]
    chosen = []
    for list_type in LIST_TYPES:
        for places in by_queue:
            for place in places:
                if place.list_type != list_type:
                    continue
                if query.type and place.list_type != query.type.value:
                    continue
                if query.state and query.state.value not in place.states:
                    continue
                chosen.append(place)
    return chosen


def _predicate(query: ListQuery, place: Place) -> Callable[[list[Any]], bool] | None:
    """Return a test on [description, status, meta] of a job hash, or None when the place answers alone."""
    wanted_state = query.state.value if query.state else None
    check_state = wanted_state is not None and len(place.states) > 1
    if not check_state and not query.task_type:
        return None

    def matches(fields: list[Any]) -> bool:
        description, status, meta_raw = fields
        if description is None:
            return False  # expired or deleted between the two reads
        if query.task_type and description.decode() != query.task_type:
            return False
        if check_state:
            meta = json.loads(meta_raw) if meta_raw else {}
            return state_of(status.decode() if status else None, meta)[0] == wanted_state
        return True

    return matches


def _inspect(connection: redis.Redis, place: Place, ids: list[str]) -> list[list[Any]]:
    """Return [task_type, status, meta] of each id, from its job hash (or its accepted record)."""
    if place.accepted:
        records = accepted.get_many(connection, ids)
        return [[record["task_type"].encode() if record else None, b"accepted", None] for record in records]
    return read_fields(connection, ids, FILTER_FIELDS)


def _parse_cursor(cursor: str) -> tuple[int, int]:
    try:
        place_index, position = (int(part) for part in cursor.split(".", 1))
    except ValueError:
        raise InvalidRequest(
            "cursor is not one this API gave out; pass next_cursor from the previous page unchanged",
            [{"field": "cursor", "message": "malformed cursor"}],
        ) from None
    if not (0 <= place_index <= MAX_OFFSET and 0 <= position <= MAX_OFFSET):
        raise InvalidRequest("cursor is out of range", [{"field": "cursor", "message": "out of range"}])
    return place_index, position


def _page(
    connection: redis.Redis, query: ListQuery, places: list[Place], sizes: list[int]
) -> tuple[list[str], str | None]:
    """Collect up to `limit` matching ids starting at the cursor (or after `offset` matches)."""
    start_index, start_pos = _parse_cursor(query.cursor) if query.cursor else (0, 0)
    skip = 0 if query.cursor else query.offset
    ids: list[str] = []
    inspected = 0
    for index in range(start_index, len(places)):
        place, size = places[index], sizes[index]
        position = start_pos if index == start_index else 0
        matches = _predicate(query, place)
        while position < size:
            if matches is None:
                available = size - position
                if skip >= available:
                    skip -= available
                    break
                position += skip
                skip = 0
                take = min(query.limit - len(ids), size - position)
                ids.extend(place.read(connection, position, position + take - 1))
                position += take
            else:
                if inspected >= MAX_INSPECTED:
                    return ids, f"{index}.{position}"  # a short page: the client follows the cursor
                chunk = place.read(connection, position, position + SCAN_CHUNK - 1)
                if not chunk:
                    break
                inspected += len(chunk)
                for offset_in_chunk, fields in enumerate(_inspect(connection, place, chunk)):
                    if not matches(fields):
                        continue
                    if skip:
                        skip -= 1
                        continue
                    ids.append(chunk[offset_in_chunk])
                    if len(ids) == query.limit:
                        position += offset_in_chunk + 1
                        break
                else:
                    position += len(chunk)
            if len(ids) == query.limit:
                more = position < size or index + 1 < len(places)
                return ids, (f"{index}.{position}" if more else None)
    return ids, None


def _total(connection: redis.Redis, query: ListQuery, places: list[Place], sizes: list[int]) -> tuple[int, bool]:
    """Return (total, exact): exact unless counting would read more than MAX_INSPECTED job hashes."""
    to_inspect = sum(size for place, size in zip(places, sizes, strict=True) if _predicate(query, place))
    if to_inspect > MAX_INSPECTED:
        return sum(sizes), False
    total = 0
    for place, size in zip(places, sizes, strict=True):
        matches = _predicate(query, place)
        if matches is None:
            total += size
            continue
        for start in range(0, size, SCAN_CHUNK):
            chunk = place.read(connection, start, start + SCAN_CHUNK - 1)
            total += sum(1 for fields in _inspect(connection, place, chunk) if matches(fields))
    return total, True


def _describe(connection: redis.Redis, ids: list[str]) -> list[dict[str, Any]]:
    """Return the list entries of `ids`: from their jobs, or from their accepted records; skip vanished ones."""
    found = read_fields(connection, ids, SUMMARY_FIELDS)
    jobs = [summarize_fields(job_id, values) for job_id, values in zip(ids, found, strict=True)]
    missing = [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None]
    records = dict(zip(missing, accepted.get_many(connection, missing), strict=True))
    entries = []
    for job_id, job in zip(ids, jobs, strict=True):
        if job is not None:
            entries.append(job)
        elif record := records.get(job_id):
            entries.append(accepted_summary(job_id, record))
    return entries


def list_tasks(connection: redis.Redis, query: ListQuery) -> dict[str, Any]:
    """Return the seed's `{tasks, total, filters, available_filters}` document plus paging fields."""
    if query.task_type:
        registry.get(query.task_type)  # an unknown name is a 400 listing the known ones
    with redis_errors():
        places = _select(connection, query)
        pipe = connection.pipeline(transaction=False)
        for place in places:
            place.where.size(pipe)
        sizes = [int(n) for n in pipe.execute()]
        ids, next_cursor = _page(connection, query, places, sizes)
        found = _describe(connection, ids)
        total, exact = _total(connection, query, places, sizes)
    return {
        "tasks": found,
        "total": total,
        "total_exact": exact,
        "filters": {
            "state": query.state.value if query.state else None,
            "type": query.type.value if query.type else None,
            "task_type": query.task_type,
            "priority": query.priority.value if query.priority else None,
        },
        "available_filters": {
            "states": list(STATES),
            "types": list(LIST_TYPES),
            "task_types": registry.names(),
            "priorities": list(PRIORITIES),
        },
        "limit": query.limit,
        "offset": query.offset,
        "next_cursor": next_cursor,
    }
