"""infra.processes: the launcher's stop request, which a signal handler makes, can never deadlock it."""

from __future__ import annotations

import subprocess
import sys

from tests.processes import ROOT

STOPS = """
import random, signal
from infra import processes

processes.POLL_INTERVAL_S = 0.00001  # poll as often as possible: the main loop is always near its pause
launch = None
signal.signal(signal.SIGALRM, lambda signum, frame: launch.request_stop())  # as infra.launcher's handler does
for _ in range(2000):
    launch = processes.Launch()
    signal.setitimer(signal.ITIMER_REAL, random.uniform(0.0001, 0.001))
    while launch.running():
        launch.pause()
print("stopped 2000 times")
"""


def test_a_stop_requested_from_a_signal_handler_always_stops_the_main_loop():
    """A handler that set a threading.Event deadlocked when the signal landed while the loop held the Event's
    lock in wait(): Ctrl-C on `make run` then hung for good (this loop hung in 3 of 3 runs with an Event)."""
    ran = subprocess.run([sys.executable, "-c", STOPS], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "stopped 2000 times"
