"""Process helpers for the benchmarks: child environments, waiting, stopping, descendants and RSS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _status_mb(pids: list[int], field: str) -> dict[int, float]:
    """Return `field` (a kB line of /proc/<pid>/status) of each live pid, in MB."""
    sizes = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith(field + ":"):
                sizes[pid] = int(line.split()[1]) / 1024
    return sizes


def peak_rss_mb(pids: list[int]) -> dict[int, float]:
    """Return each live pid's peak resident set size (VmHWM) in MB."""
    return _status_mb(pids, "VmHWM")


def rss_mb(pids: list[int]) -> dict[int, float]:
    """Return each live pid's resident set size now (VmRSS) in MB."""
    return _status_mb(pids, "VmRSS")


def descendants(pid: int) -> list[int]:
    """Return the pids of every live descendant of `pid`."""
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == parent:
                    found.append(int(entry.name))
                    frontier.append(int(entry.name))
    return found


ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
"""Where every bench writes its table (`<name>.md`) and its figures (`<name>.json`)."""


def save_results(name: str, markdown: str, data: Any) -> None:
    """Write a bench's table and figures to RESULTS as `<name>.md` and `<name>.json`."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(markdown)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2))


BENCH_API_KEY = "tr_bench_bootstrap_key_for_benchmarks_only_000"
"""The admin key every benchmark's API accepts (TASKRELAY_BOOTSTRAP_KEY) and every load generator sends."""
KEY_HEADER_LINE = f"X-API-Key: {BENCH_API_KEY}\r\n"
"""The key as a raw HTTP/1.1 header line, for the hand-written request loaders."""


def child_env(**extra: str) -> dict[str, str]:
    """Return the environment a benchmark's child process runs with: quiet logs, this checkout importable."""
    return {
        **os.environ,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        "TASKRELAY_BOOTSTRAP_KEY": BENCH_API_KEY,
        **extra,
    }


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.005) -> None:
    """Poll `check()` every `poll_s` until it holds; raise RuntimeError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def stop_all(processes: list[subprocess.Popen], grace_s: float = 15.0, sig: int = signal.SIGTERM) -> None:
    """Send `sig` (SIGTERM) to every process, then reap each; one still running after `grace_s` is killed."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(sig)
    for process in processes:
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
