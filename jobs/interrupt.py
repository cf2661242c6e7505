"""Interrupt a task running in the worker's own process (batch and simple workers) when it is canceled.

The task is stopped the way its timeout would stop it: RQ's SIGALRM death
penalty. A cancel, arriving on the worker's pubsub thread, marks the job and
sends SIGALRM to the main thread; the handler raises TaskRevoked instead of a
timeout. The signal interrupts Python code and blocking calls such as
time.sleep alike; code inside a C extension is stopped when it returns to
Python, as with timeouts. Only the job inside its death penalty can be
interrupted, and after it SIGALRM is ignored rather than reset to its default
(RQ's choice), so a cancel landing just as a task ends cannot kill the worker.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty


class TaskRevoked(Exception):
    """Raised inside a running task that was canceled (POST /api/tasks/{id}/cancel)."""


_lock = threading.Lock()
_inside: str | None = None  # the job whose death penalty is armed in this process
_revoking: set[str] = set()  # jobs a cancel sent SIGALRM for


class CancellablePenalty(UnixSignalDeathPenalty):
    """RQ's SIGALRM job timeout, which a cancel can fire early (see the module docstring)."""

    def __init__(self, timeout: Any, exception: Any = JobTimeoutException, **kwargs: Any) -> None:
        super().__init__(timeout, exception, **kwargs)
        self._job_id: str | None = kwargs.get("job_id")

    def handle_death_penalty(self, signum: int, frame: Any) -> None:
        with _lock:
            revoked = self._job_id in _revoking
            _revoking.discard(self._job_id or "")
        if revoked:
            raise TaskRevoked(f"task {self._job_id} was canceled while it ran")
        super().handle_death_penalty(signum, frame)

    def setup_death_penalty(self) -> None:
        global _inside
        super().setup_death_penalty()
        with _lock:
            _inside = self._job_id

    def cancel_death_penalty(self) -> None:
        global _inside
        with _lock:
            _inside = None
        signal.alarm(0)
        signal.signal(signal.SIGALRM, signal.SIG_IGN)


def interrupt(job_id: str) -> bool:
    """Stop `job_id` if it is running in this process now; return whether a stop was sent."""
    with _lock:
        if job_id is None or _inside != job_id:
            return False
        _revoking.add(job_id)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGALRM)
        return True
