"""Batch throughput: DWARF kernels per hour, `dbhive batch` with each --jobs x --workers split
next to the anchor, one sequential `dbhive build -j <cores>` per kernel (both cores on one
kernel at a time).

    .venv/bin/python -m bench.bench_batch [--kernels 4] [--rounds 3] [--splits 1x2,2x1]

Inputs: distinct real Debian cloud -dbg packages (281 MB .deb, 587 MB vmlinux each):
6.1.0-47 and 6.1.0-50 from the test cache, more fetched by `dbhive fetch` (bookworm-security)
into $DBHIVE_TEST_CACHE/batch/bench-pack.  Every run starts from an empty hive (packages
linked), the packages are read once before timing (warm page cache), runs alternate between
the anchor and each split, and medians are quoted.  These machines are shared with other
work: the load average at the start is printed with the figures, and beside the measured
kernels/hour the CPU-bound rate (what the CPU seconds used would give on cores of our own).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile

from bench.measure import run_cmd
from scripts.realdata import CACHE, cache_dir
from tests.support.minihive import fetch_second_deb

BIN = os.path.dirname(sys.executable)
DBHIVE = os.path.join(BIN, "dbhive")
MORE = ("6.1.0-53-cloud-amd64", "6.1.0-54-cloud-amd64", "6.1.0-55-cloud-amd64",
        "6.1.0-56-cloud-amd64")


def packages(n: int) -> list[str]:
    found = sorted(glob.glob(f"{CACHE}/linux-image-6.1.0-47-cloud-amd64-dbg_*.deb"))[-1:]
    found.append(fetch_second_deb()["path"])
    hive = cache_dir("batch", "bench-pack")
    for release in MORE[:max(0, n - len(found))]:
        out = subprocess.run([DBHIVE, "fetch", "debian", "--suite", "bookworm-security",
                              "--release", release, "--hive", hive, "--json"], check=True,
                             capture_output=True, text=True).stdout
        found.append(os.path.join(hive, json.loads(out)[0]["file"]))
    if len(found) < n:
        raise SystemExit(f"only {len(found)} kernels available")
    return found[:n]


def warm(paths) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(1 << 24):
                pass


def fresh_hive(top: str, pkgs) -> str:
    hive = tempfile.mkdtemp(prefix="hive-", dir=top)
    pack = os.path.join(hive, "x86_64", "pack", "debian")
    os.makedirs(pack)
    for p in pkgs:
        os.symlink(p, os.path.join(pack, os.path.basename(p)))
    return hive


def anchor(top: str, pkgs, cores: int):
    """One `dbhive build -j cores` per kernel, one after the other."""
    hive = fresh_hive(top, pkgs)
    wall = cpu = rss = 0.0
    for p in pkgs:
        s = run_cmd([DBHIVE, "build", p, "--hive", hive, "--distro", "debian", "-j",
                     str(cores), "--no-progress"])
        wall, cpu, rss = wall + s.wall, cpu + s.cpu, max(rss, s.max_rss_mb)
    return wall, cpu, rss, hive


def ours(top: str, pkgs, jobs: int, workers: int):
    hive = fresh_hive(top, pkgs)
    s = run_cmd([DBHIVE, "batch", "--hive", hive, "--jobs", str(jobs), "--workers",
                 str(workers), "--no-progress", "--scratch", top])
    return s.wall, s.cpu, s.max_rss_mb, hive


def tree_peak(hive: str) -> float:
    """The largest build's peak memory (process tree, from its record), MB."""
    peaks = []
    for d, _, files in os.walk(os.path.join(hive, "x86_64", "state")):
        for f in files:
            with open(os.path.join(d, f)) as fh:
                peaks.append(json.load(fh).get("peak_rss", 0))
    return max(peaks or [0]) / 2**20


def dbs(hive: str) -> int:
    return len(glob.glob(os.path.join(hive, "x86_64", "db", "debian", "info-*.db")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernels", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--splits", default="1x2,2x1", help="JOBSxWORKERS,...")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    splits = [tuple(int(x) for x in s.split("x")) for s in args.splits.split(",")]
    pkgs = packages(args.kernels)
    warm(pkgs)
    load = os.getloadavg()
    print(f"{len(pkgs)} distinct DWARF kernels ({sum(os.path.getsize(p) for p in pkgs) / 1e9:.2f}"
          f" GB of .deb), {cores} cores, load average at start {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} (the machine is shared), {args.rounds} rounds, medians")
    rows = {"anchor": []}
    rows.update({f"batch {j}x{w}": [] for j, w in splits})
    with tempfile.TemporaryDirectory(prefix="bench-batch-", dir=cache_dir("batch")) as top:
        for r in range(args.rounds):
            wall, cpu, rss, hive = anchor(top, pkgs, cores)
            assert dbs(hive) == len(pkgs)
            rows["anchor"].append((wall, cpu, rss, 0.0))
            print(f"round {r + 1}: anchor {wall:.1f} s", flush=True)
            subprocess.run(["rm", "-rf", hive])
            for j, w in splits:
                wall, cpu, rss, hive = ours(top, pkgs, j, w)
                assert dbs(hive) == len(pkgs)
                rows[f"batch {j}x{w}"].append((wall, cpu, rss, tree_peak(hive)))
                print(f"round {r + 1}: batch {j}x{w} {wall:.1f} s", flush=True)
                subprocess.run(["rm", "-rf", hive])
    print(f"\n{'':22s} {'wall s':>8s} {'kernels/h':>10s} {'CPU s':>8s} {'CPU-bound/h':>12s} "
          f"{'peak RSS MB':>12s} {'build tree MB':>14s} {'vs anchor':>10s}")
    # CPU-bound/h: kernels per hour if the cores were this run's alone (K * 3600 * cores / CPU s)
    base = statistics.median(x[0] for x in rows["anchor"])
    for label, samples in rows.items():
        wall = statistics.median(x[0] for x in samples)
        cpu = statistics.median(x[1] for x in samples)
        rss = max(x[2] for x in samples)
        peak = max(x[3] for x in samples)
        name = ("anchor: build -j%d each" % cores) if label == "anchor" else \
            label + " (jobs x workers)"
        print(f"{name:22s} {wall:8.1f} {len(pkgs) * 3600 / wall:10.0f} {cpu:8.1f} "
              f"{len(pkgs) * 3600 * cores / cpu:12.0f} {rss:12.0f} "
              f"{peak if peak else float('nan'):14.0f} {base / wall:9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
