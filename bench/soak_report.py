"""bench.soak's measurements and verdict: RSS per process over the run, Redis memory at each phase, lost tasks."""

from __future__ import annotations

import argparse
import os
import platform
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any, Protocol

from bench.paced import Submitted
from bench.procs import descendants, rss_mb

RSS_TOLERANCE = 0.10
"""How far from its end-of-warm-up value a process's RSS may move and still count as flat (a fraction)."""
MB = 1024 * 1024


@dataclass
class Sample:
    """One reading: seconds since the load began, RSS by process (MB), Redis used_memory (bytes) and keys."""

    at: float
    rss: dict[str, float]
    used_memory: int
    keys: int


class Tally(Protocol):
    """What the run's tracker counted (bench.soak.Tracker)."""

    finished: int
    failed: int
    pending: set[str]


def sample_processes(api_pid: int, bridge_pid: int, worker_pids: list[int]) -> dict[str, float]:
    """Return the RSS in MB of the gunicorn master and workers, the bridge, and each worker and its children."""
    pids = {"api master": api_pid, "bridge": bridge_pid}
    pids.update({f"api worker {pid}": pid for pid in sorted(descendants(api_pid))})
    for number, pid in enumerate(worker_pids, 1):
        pids[f"worker {number}"] = pid
        # RQ forks its scheduler from the worker; it lives as long as the worker.
        pids.update({f"worker {number} scheduler {child}": child for child in sorted(descendants(pid))})
    sizes = rss_mb(list(pids.values()))
    return {label: round(sizes[pid], 1) for label, pid in pids.items() if pid in sizes}


def rss_rows(samples: list[Sample], warm_at: float, load_end: float) -> dict[str, dict[str, Any]]:
    """Return, per process, its RSS at the end of the warm-up, min, max, at the end of the load, and drifts in %."""
    labels = list(dict.fromkeys(label for sample in samples for label in sample.rss))
    rows: dict[str, dict[str, Any]] = {}
    for label in labels:
        after = [s.rss[label] for s in samples if label in s.rss and warm_at <= s.at <= load_end]
        if len(after) < 2:
            rows[label] = {"samples": len(after), "flat": False}
            continue
        warm = after[0]
        widest = max(abs(max(after) - warm), abs(min(after) - warm)) / warm
        rows[label] = {
            "samples": len(after),
            "warm_mb": warm,
            "min_mb": min(after),
            "max_mb": max(after),
            "final_mb": after[-1],
            "drift_pct": round((after[-1] - warm) / warm * 100, 1),
            "widest_drift_pct": round(widest * 100, 1),
            "flat": widest <= RSS_TOLERANCE,
        }
    return rows


def _redis_moments(samples: list[Sample], memory: dict[str, Any], warm_at: float) -> dict[str, tuple[int, int]]:
    """Return {moment: (used_memory, keys)} from the baseline to after the purge."""
    during = [s for s in samples if s.at <= memory["load_end_s"]]
    warm = next((s for s in during if s.at >= warm_at), during[-1])
    peak = max(during, key=lambda s: s.used_memory)
    return {
        "baseline, before the first submit": (memory["baseline"], memory["baseline_keys"]),
        f"end of warm-up ({warm.at:.0f} s)": (warm.used_memory, warm.keys),
        f"peak during the load ({peak.at:.0f} s)": (peak.used_memory, peak.keys),
        f"end of the load ({during[-1].at:.0f} s)": (during[-1].used_memory, during[-1].keys),
        f"backlog drained ({memory['drained_s']:.0f} s)": (memory["drained"], memory["drained_keys"]),
        f"every result expired ({memory['expired_wait_s']:.0f} s later)": (
            memory["after_ttl"],
            memory["after_ttl_keys"],
        ),
        "after POST /api/tasks/purge": (memory["after_purge"], memory["after_purge_keys"]),
    }


def report(
    args: argparse.Namespace,
    samples: list[Sample],
    memory: dict[str, Any],
    submitted: Submitted,
    tally: Tally,
    purged: dict[str, Any],
    exits: dict[str, int | None],
) -> dict[str, Any]:
    """Return the run's figures ("data") and its Markdown table and verdict ("markdown")."""
    warm_at = args.warmup * args.seconds
    rows = rss_rows(samples, warm_at, memory["load_end_s"])
    moments = _redis_moments(samples, memory, warm_at)
    tolerance = args.tolerance_mb * MB
    back = {
        "after TTL": memory["after_ttl"] - memory["baseline"] <= tolerance,
        "after purge": memory["after_purge"] - memory["baseline"] <= tolerance,
    }
    lost = len(tally.pending)
    flat = all(row["flat"] for row in rows.values())
    verdict_ok = flat and all(back.values()) and lost == 0 and not exits
    problems = [f"{label}'s RSS moved more than ±10%" for label, row in rows.items() if not row["flat"]]
    problems += [f"Redis memory not back {when}" for when, ok in back.items() if not ok]
    problems += [f"{lost} tasks lost"] if lost else []
    problems += [f"{name} exited ({code})" for name, code in exits.items()]
    verdict = (
        "PASS: every process's RSS within ±10% of its end-of-warm-up value; Redis used_memory back within"
        f" {args.tolerance_mb:g} MB of its baseline after the TTL and after the purge; nothing lost"
        if verdict_ok
        else "FAIL: " + "; ".join(problems)
    )
    rate = args.tasks / args.seconds
    statuses = dict(sorted(submitted.statuses.items()))
    lines = [
        f"Soak run ({args.tasks:,} `bench_noop` tasks over {args.seconds:.0f} s, {rate:.0f}/s, priorities mixed;"
        f" gunicorn 2 workers with RabbitMQ ingress, the bridge, 2 batch workers; own redis-server;"
        f" RESULT_TTL_S={args.result_ttl_s}, MAINTENANCE_INTERVAL_S={args.maintenance_s};"
        f" {platform.machine()}, {os.cpu_count()} cores; {date.today().isoformat()}; one run)",
        "",
        f"RSS (VmRSS, MB) sampled every {args.sample_s:g} s; warm-up: the first {args.warmup:.0%} of the load"
        f" ({warm_at:.0f} s); drift measured up to the end of the load.",
        "",
        "| process | end of warm-up | min | max | end of load | drift at end | widest drift | flat (±10%) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, row in rows.items():
        if "warm_mb" not in row:
            lines.append(f"| {label} | — | — | — | — | — | — | too few samples ({row['samples']}) |")
            continue
        lines.append(
            f"| {label} | {row['warm_mb']:.1f} | {row['min_mb']:.1f} | {row['max_mb']:.1f} | {row['final_mb']:.1f}"
            f" | {row['drift_pct']:+.1f}% | {row['widest_drift_pct']:.1f}% | {'yes' if row['flat'] else '**no**'} |"
        )
    lines += ["", "| Redis | used_memory (MB) | keys | vs baseline |", "|---|---:|---:|---:|"]
    for moment, (used, count) in moments.items():
        delta = (used - memory["baseline"]) / MB
        lines.append(f"| {moment} | {used / MB:.2f} | {count:,} | {delta:+.2f} MB |")
    ran = submitted.seconds
    new_keys = memory["new_keys_after_purge"]
    lines += [
        "",
        f"Keys after the purge that were not there before the first submit ({len(new_keys)}): "
        + (", ".join(f"`{name}`" for name in new_keys[:20]) or "none"),
        "",
        "| tasks | figure |",
        "|---|---:|",
        f"| accepted (202) | {len(submitted.accepted):,} of {args.tasks:,} |",
        f"| finished / failed | {tally.finished:,} / {tally.failed:,} |",
        f"| **lost** (accepted, never ended) | **{lost}** |",
        f"| not accepted (other answers, or unsent at the deadline) | {len(submitted.rejected)} + {submitted.unsent} |",
        f"| HTTP answers by status | {', '.join(f'{k}: {v:,}' for k, v in statuses.items())} |",
        f"| connections lost mid-request (resent) | {submitted.connection_errors} |",
        f"| submit rate achieved / most behind schedule | {len(submitted.accepted) / ran:.0f}/s"
        f" / {submitted.most_behind_s:.2f} s |",
        f"| purge | {purged.get('details')} |",
        "",
        f"Verdict: {verdict}",
        "",
    ]
    data = {
        "tasks": args.tasks,
        "seconds": args.seconds,
        "result_ttl_s": args.result_ttl_s,
        "maintenance_interval_s": args.maintenance_s,
        "accepted": len(submitted.accepted),
        "finished": tally.finished,
        "failed": tally.failed,
        "lost": lost,
        "lost_sample": sorted(tally.pending)[:20],
        "rejected": submitted.rejected[:20],
        "unsent": submitted.unsent,
        "connection_errors": submitted.connection_errors,
        "http_statuses": statuses,
        "rss": rows,
        "redis": {moment: {"used_memory": used, "keys": count} for moment, (used, count) in moments.items()},
        "redis_back": back,
        "purge": purged,
        "exits": exits,
        "pass": verdict_ok,
        "verdict": verdict,
        "samples": [asdict(sample) for sample in samples],
    }
    return {"markdown": "\n".join(lines), "data": data}
