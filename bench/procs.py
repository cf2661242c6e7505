"""Process helpers for the benchmarks: descendants and peak RSS, read from /proc."""

from __future__ import annotations

from pathlib import Path


def peak_rss_mb(pids: list[int]) -> dict[int, float]:
    """Return each live pid's peak resident set size (VmHWM) in MB."""
    peaks = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                peaks[pid] = int(line.split()[1]) / 1024
    return peaks


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
