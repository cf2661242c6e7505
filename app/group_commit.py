"""Group commit: threads that submit at the same time share one flush (one round trip for all of them).

The first thread to arrive while no flush runs becomes the leader: it takes
everything waiting (up to `max_batch`), flushes it and wakes the others with
their own outcome. Threads that arrive during a flush wait and go out together
in the next one, led by one of them. A lone caller is its own leader and waits
for nobody, so this adds no latency without concurrency; under load each
flush carries as many items as arrived during the previous one.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

Flush = Callable[[list[T]], list[BaseException | None]]
"""Commit a batch; return, per item and in order, None or the exception that item's caller should raise."""


class StoppedWaiting(Exception):
    """A caller with a `wait_s` stopped waiting for its item (only a caller that was not leading a flush can)."""


class Withdrawn(StoppedWaiting):
    """The item had not gone out: it was taken back and will not be flushed."""


class Unanswered(StoppedWaiting):
    """The item is in a flush that was still running: it may or may not be committed; its outcome goes unread."""


class _Slot(Generic[T]):
    __slots__ = ("done", "error", "item", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None
        self.wake = threading.Lock()  # held until this caller is woken: its item flushed, or the lead handed to it
        self.wake.acquire()


class GroupCommit(Generic[T]):
    """Batch concurrent `submit` calls into shared `flush` calls; each caller returns once its item is flushed.

    Each waiting caller sleeps on a lock of its own and is woken exactly once:
    when its item was flushed, or when the lead is handed to it. (One shared
    condition would wake every waiter after each flush, only for most of them
    to sleep again: several context switches per item under load.)
    """

    def __init__(self, flush: Flush[T], max_batch: int = 256) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._observers: list[Callable[[list[T]], None]] = []
        self._lock = threading.Lock()
        self._waiting: list[_Slot[T]] = []
        self._flushing = False

    def observe(self, observer: Callable[[list[T]], None]) -> None:
        """Call `observer(batch)` before each flush, with the items it carries (tests and metrics count with it)."""
        self._observers.append(observer)

    def submit(self, item: T, wait_s: float | None = None) -> None:
        """Flush `item` (with whatever else is waiting); raise the error the flush gave it, if any.

        With `wait_s`, a caller that waits for another's flush stops after that long and raises Withdrawn (its item
        had not gone out, and now never will) or Unanswered (its item is in the flush still running). A caller
        that leads a flush waits for it whatever `wait_s` says.
        """
        slot = _Slot(item)
        with self._lock:
            self._waiting.append(slot)
            leading, self._flushing = not self._flushing, True
        if not leading and not slot.wake.acquire(timeout=-1 if wait_s is None else wait_s):  # done, or now leading
            with self._lock:  # the lead is handed, and an item taken for a flush, only under this lock
                if not slot.wake.acquire(blocking=False):
                    if any(waiting is slot for waiting in self._waiting):
                        self._waiting = [waiting for waiting in self._waiting if waiting is not slot]
                        raise Withdrawn(f"not flushed within {wait_s:g} s")
                    raise Unanswered(f"its flush did not end within {wait_s:g} s")
        while not slot.done:  # leading: flush batches until this caller's own item has gone out
            with self._lock:
                batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
            for waiting, error in zip(batch, self._outcomes(batch), strict=True):
                waiting.error, waiting.done = error, True
                if waiting is not slot:
                    waiting.wake.release()
            with self._lock:
                if not self._waiting:
                    self._flushing = False
                elif slot.done:  # hand the lead to the longest waiting caller
                    self._waiting[0].wake.release()
        if slot.error is not None:
            raise slot.error

    def _outcomes(self, batch: list[_Slot[T]]) -> list[BaseException | None]:
        items = [slot.item for slot in batch]
        try:
            for observer in self._observers:
                observer(items)
            outcomes = self._flush(items)
            if len(outcomes) != len(batch):
                raise RuntimeError(f"flush returned {len(outcomes)} outcomes for {len(batch)} items")
            return outcomes
        except BaseException as exc:  # every caller in the batch gets its own copy to raise
            errors: list[BaseException | None] = [exc]
            return errors + [copy.copy(exc) for _ in batch[1:]]
