"""Supervise child processes: spawn each in its own process group, tied to the launcher's life; stop them all.

On Linux the children get SIGTERM even when the launcher is killed outright (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import LaunchError

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 10.0
"""How long children get to exit after SIGTERM before SIGKILL, in seconds."""
POLL_INTERVAL_S = 0.2
"""How often the launcher checks its children and its readiness conditions, in seconds."""
PR_SET_PDEATHSIG = 1

log = logging.getLogger("taskrelay.launcher")
Process = subprocess.Popen[bytes]


@dataclass
class Launch:
    """The children by name, and whether someone asked everything to stop."""

    children: dict[str, Process] = field(default_factory=dict)
    stopping: bool = False
    """Set by `request_stop()`, which a signal handler calls: a plain attribute, because a handler that takes a
    lock (a threading.Event's) deadlocks when the signal lands while this same thread holds that lock in
    Event.wait(), and the launcher would never stop (3 in 100 runs of a tight wait loop here)."""

    def request_stop(self) -> None:
        """Ask everything to stop (safe from a signal handler: it takes no lock)."""
        self.stopping = True

    def pause(self) -> None:
        """Wait one poll interval (a stop request is seen at the next check, at most POLL_INTERVAL_S later)."""
        time.sleep(POLL_INTERVAL_S)

    def child_environment(self, **overrides: str) -> dict[str, str]:
        """Return the environment the children get: the launcher's own, with `overrides`."""
        return {**os.environ, **overrides}

    def exited(self) -> str | None:
        """Describe a child that has exited, if any."""
        for name, process in self.children.items():
            if process.poll() is not None:
                return f"{name} (pid {process.pid}) exited with code {process.returncode}"
        return None

    def running(self) -> bool:
        """Return whether nobody asked to stop and every child still runs."""
        return not self.stopping and self.exited() is None

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        """Start `argv` in its own process group, so Ctrl-C reaches only the launcher, which orders the shutdown."""
        # PDEATHSIG follows the thread that forked, so every child must be spawned from the main thread.
        die_with_launcher = _die_with(os.getpid())
        # No stdin: a background process group that reads the terminal would be stopped by SIGTTIN.
        process = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, process_group=0, preexec_fn=die_with_launcher
        )
        self.children[name] = process
        log.info("started %s (pid %d)", name, process.pid)

    def wait_until(self, ready: Callable[[], bool], timeout_s: float, failure: str) -> None:
        """Poll `ready` until true or until not running(); raise LaunchError(failure) after `timeout_s` seconds."""
        deadline = time.monotonic() + timeout_s
        while self.running() and not ready():
            if time.monotonic() > deadline:
                raise LaunchError(f"{failure} within {timeout_s:.0f} s")
            self.pause()


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _die_with(launcher_pid: int) -> Callable[[], None] | None:
    """Return a pre-exec hook that makes the child get SIGTERM when the launcher dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    # Loaded here, not in the child: the hook must do as little as possible between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)

    def set_parent_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != launcher_pid:  # the launcher died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return set_parent_death_signal


def stop_children(children: dict[str, Process]) -> None:
    """SIGTERM every child, then SIGKILL its process group once it exits or STOP_GRACE_S have passed."""
    for process in children.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for name, process in children.items():
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s (pid %d) ignored SIGTERM for %.0f s; killing it", name, process.pid, STOP_GRACE_S)
        # The whole group: an RQ worker's scheduler outlives its worker if the worker was SIGKILLed.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
