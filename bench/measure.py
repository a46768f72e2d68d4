"""Shared benchmark helpers: run a command or a callable, report wall, CPU and peak RSS.

Benchmarks run ours and the anchor back to back in one run, several times, and quote
medians and ratios (these machines are noisy)."""
from __future__ import annotations

import os
import statistics
import subprocess
import time
from dataclasses import dataclass


@dataclass
class Sample:
    wall: float
    cpu: float
    max_rss_mb: float


def run_cmd(argv, stdout=subprocess.DEVNULL, env=None) -> Sample:
    """Run a command to completion; its own rusage (wait4) gives CPU and peak RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=stdout, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {err.strip()[-500:]}")
    return Sample(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss / 1024)


def own_peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM, MB).  A command it starts inherits it as the floor of
    its own ru_maxrss (exec keeps the high-water mark of the memory it replaces, the
    parent's when forked or vforked), so a peak RSS figure at or below this says nothing:
    a benchmark keeps its own process small and prints this beside its figures."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def median_sample(samples) -> Sample:
    return Sample(statistics.median(s.wall for s in samples),
                  statistics.median(s.cpu for s in samples),
                  max(s.max_rss_mb for s in samples))


def compare(rows, ours_label: str, anchor_label: str) -> str:
    """A small table: label, wall, cpu, rss; then the wall ratio ours/anchor."""
    lines = [f"{'':28s} {'wall s':>9s} {'cpu s':>9s} {'peak RSS MB':>12s}"]
    by = {}
    for label, s in rows:
        by[label] = s
        lines.append(f"{label:28s} {s.wall:9.3f} {s.cpu:9.3f} {s.max_rss_mb:12.0f}")
    if ours_label in by and anchor_label in by:
        o, a = by[ours_label], by[anchor_label]
        lines.append(f"ratio {ours_label}/{anchor_label}: wall {o.wall / a.wall:.2f}x, "
                     f"peak RSS {o.max_rss_mb / a.max_rss_mb:.2f}x")
    return "\n".join(lines)
