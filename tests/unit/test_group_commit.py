"""GroupCommit: concurrent submits share flushes, each caller gets its own outcome, a lone caller waits for nobody."""

from __future__ import annotations

import threading
import time

import pytest

from app.group_commit import GroupCommit
from tests.helpers import wait_until


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


class Gated(Recorder):
    """A flush that waits for its gate (one event per flush, in order) before it records its batch."""

    def __init__(self, flushes: int) -> None:
        super().__init__()
        self.gates = [threading.Event() for _ in range(flushes)]
        self.entered = [threading.Event() for _ in range(flushes)]
        self.count = 0

    def __call__(self, items: list[int]) -> list[BaseException | None]:
        n, self.count = self.count, self.count + 1
        self.entered[n].set()
        assert self.gates[n].wait(10)
        return super().__call__(items)


def background(commit: GroupCommit[int], item: int, wait_s: float | None = None) -> tuple[threading.Thread, list]:
    outcome: list = []

    def submit() -> None:
        try:
            commit.submit(item, wait_s)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=submit, daemon=True)
    thread.start()
    return thread, outcome


def test_a_caller_that_stops_waiting_before_its_item_went_out_withdraws_it():
    from app.group_commit import Withdrawn

    flush = Gated(2)
    commit = GroupCommit(flush)
    leader, led = background(commit, 1)
    assert flush.entered[0].wait(10)
    with pytest.raises(Withdrawn):
        commit.submit(2, wait_s=0.05)  # queued behind the held flush: taken back
    flush.gates[0].set()
    leader.join(10)
    flush.gates[1].set()
    commit.submit(3)  # the group commit is free again: this caller leads at once
    assert led == [None] and flush.batches == [[1], [3]]


def test_a_caller_that_stops_waiting_while_its_item_is_in_a_running_flush_leaves_it_there():
    from app.group_commit import Unanswered

    flush = Gated(2)
    commit = GroupCommit(flush)
    first, _ = background(commit, 1)
    assert flush.entered[0].wait(10)
    second, led = background(commit, 2)  # will lead the next flush
    wait_until(lambda: len(commit._waiting) == 1)
    third, stopped = background(commit, 3, wait_s=0.3)  # goes out in that next flush, led by 2
    wait_until(lambda: len(commit._waiting) == 2)
    flush.gates[0].set()
    assert flush.entered[1].wait(10)
    third.join(10)
    assert len(stopped) == 1 and isinstance(stopped[0], Unanswered)  # its flush is still held
    flush.gates[1].set()
    first.join(10)
    second.join(10)
    assert led == [None] and flush.batches == [[1], [2, 3]]  # flushed all the same


def test_callers_that_stop_waiting_under_load_never_lose_or_double_an_item_or_the_lead():
    from app.group_commit import Unanswered, Withdrawn

    flush = Recorder(delay_s=0.002)
    commit = GroupCommit(flush, max_batch=4)
    outcomes: dict[int, BaseException | None] = {}

    def submit(item: int) -> None:
        try:
            commit.submit(item, wait_s=0.001 * (item % 5))
            outcomes[item] = None
        except BaseException as exc:
            outcomes[item] = exc

    threads = [threading.Thread(target=submit, args=(n,), daemon=True) for n in range(400)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert not any(thread.is_alive() for thread in threads), "a submit never returned"
    flushed = [item for batch in flush.batches for item in batch]
    assert len(flushed) == len(set(flushed))
    withdrawn = {item for item, exc in outcomes.items() if isinstance(exc, Withdrawn)}
    answered = {item for item, exc in outcomes.items() if exc is None}
    assert withdrawn and not withdrawn & set(flushed)
    assert answered <= set(flushed)
    assert set(outcomes) == set(range(400)) and all(
        exc is None or isinstance(exc, Withdrawn | Unanswered) for exc in outcomes.values()
    )
    assert set(flushed) | withdrawn == set(range(400))
    commit.submit(1000)
    assert flush.batches[-1] == [1000]
