"""GroupCommit: concurrent submits share flushes, each caller gets its own outcome, a lone caller waits for nobody."""

from __future__ import annotations

import threading
import time

import pytest

from app.group_commit import GroupCommit


class Recorder:
    """A flush that records its batches, optionally slow, failing the items it is told to fail."""

    def __init__(self, delay_s: float = 0.0, refuse: frozenset[int] = frozenset()) -> None:
        self.batches: list[list[int]] = []
        self.delay_s = delay_s
        self.refuse = refuse
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[BaseException | None]:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(self.delay_s)
        with self._lock:
            self.batches.append(items)
            self.running -= 1
        return [ValueError(f"refused {item}") if item in self.refuse else None for item in items]


def run_concurrently(commit: GroupCommit[int], items: list[int]) -> dict[int, BaseException | None]:
    outcomes: dict[int, BaseException | None] = {}
    start = threading.Barrier(len(items))

    def submit(item: int) -> None:
        start.wait()
        try:
            commit.submit(item)
            outcomes[item] = None
        except BaseException as exc:
            outcomes[item] = exc

    threads = [threading.Thread(target=submit, args=(item,), daemon=True) for item in items]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a submit never returned"
    return outcomes


def test_a_lone_caller_is_flushed_alone_and_at_once():
    flush = Recorder()
    commit = GroupCommit(flush)
    commit.submit(1)
    commit.submit(2)
    assert flush.batches == [[1], [2]]


def test_concurrent_callers_share_flushes_and_every_item_is_flushed_once():
    flush = Recorder(delay_s=0.02)
    commit = GroupCommit(flush)
    outcomes = run_concurrently(commit, list(range(40)))
    assert outcomes == dict.fromkeys(range(40))
    flushed = sorted(item for batch in flush.batches for item in batch)
    assert flushed == list(range(40))
    assert len(flush.batches) < 40  # callers that arrived during a flush went out together
    assert flush.most_running == 1  # one flush at a time


def test_each_caller_gets_its_own_outcome():
    flush = Recorder(delay_s=0.01, refuse=frozenset({3, 7}))
    outcomes = run_concurrently(GroupCommit(flush), list(range(10)))
    assert {item for item, error in outcomes.items() if error is not None} == {3, 7}
    assert str(outcomes[3]) == "refused 3"


def test_a_flush_that_raises_fails_its_whole_batch_with_separate_exceptions():
    def broken(items: list[int]) -> list[BaseException | None]:
        time.sleep(0.01)
        raise ConnectionError("broker gone")

    outcomes = run_concurrently(GroupCommit(broken), list(range(8)))
    errors = list(outcomes.values())
    assert all(isinstance(error, ConnectionError) and str(error) == "broker gone" for error in errors)
    assert len({id(error) for error in errors}) == len(errors)  # no exception object raised in two threads


def test_max_batch_bounds_a_flush():
    flush = Recorder(delay_s=0.01)
    run_concurrently(GroupCommit(flush, max_batch=3), list(range(20)))
    assert max(len(batch) for batch in flush.batches) <= 3
    assert sorted(item for batch in flush.batches for item in batch) == list(range(20))


def test_a_wrong_number_of_outcomes_is_an_error_for_every_caller():
    commit: GroupCommit[int] = GroupCommit(lambda items: [])
    with pytest.raises(RuntimeError, match="0 outcomes for 1 items"):
        commit.submit(1)


def test_sustained_load_hands_the_lead_on_and_loses_no_caller():
    """16 threads submitting back to back through small batches: every item flushed once, no caller left asleep."""
    flush = Recorder()
    commit = GroupCommit(flush, max_batch=4)
    per_thread = 200

    def submit_many(base: int) -> None:
        for n in range(per_thread):
            commit.submit(base + n)

    threads = [threading.Thread(target=submit_many, args=(t * per_thread,), daemon=True) for t in range(16)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a caller was never woken"
    assert sorted(item for batch in flush.batches for item in batch) == list(range(16 * per_thread))
    assert flush.most_running == 1
