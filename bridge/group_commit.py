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


class _Slot(Generic[T]):
    __slots__ = ("done", "error", "item")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class GroupCommit(Generic[T]):
    """Batch concurrent `submit` calls into shared `flush` calls; each caller returns once its item is flushed."""

    def __init__(self, flush: Flush[T], max_batch: int = 256) -> None:
        self._flush = flush
        self._max_batch = max_batch
        self._condition = threading.Condition()
        self._waiting: list[_Slot[T]] = []
        self._flushing = False

    def submit(self, item: T) -> None:
        """Flush `item` (with whatever else is waiting); raise the error the flush gave it, if any."""
        slot = _Slot(item)
        with self._condition:
            self._waiting.append(slot)
            while not slot.done:
                if self._flushing:
                    self._condition.wait()
                    continue
                batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
                self._flushing = True
                self._condition.release()
                try:
                    outcomes = self._outcomes(batch)
                finally:
                    self._condition.acquire()
                    self._flushing = False
                for waiting, error in zip(batch, outcomes, strict=True):
                    waiting.error, waiting.done = error, True
                self._condition.notify_all()
        if slot.error is not None:
            raise slot.error

    def _outcomes(self, batch: list[_Slot[T]]) -> list[BaseException | None]:
        try:
            outcomes = self._flush([slot.item for slot in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"flush returned {len(outcomes)} outcomes for {len(batch)} items")
            return outcomes
        except BaseException as exc:  # every caller in the batch gets its own copy to raise
            errors: list[BaseException | None] = [exc]
            return errors + [copy.copy(exc) for _ in batch[1:]]
