"""Batch throughput: DWARF kernels per hour, `dbhive batch` with each --jobs x --workers split
next to the anchor, one sequential `dbhive build -j <cores>` per kernel (both cores on one
kernel at a time).

    .venv/bin/python -m bench.bench_batch [--kernels 4] [--rounds 3] [--splits 1x2,2x1]

Inputs: distinct real Debian cloud -dbg packages (281 MB .deb, 587 MB vmlinux each): the
test cache's two (6.1.0-47 and the mini-hive's second kernel), and those fetched before into
$DBHIVE_TEST_CACHE/batch/bench-pack, read with no network; only when these are too few are
more chosen from bookworm's and bookworm-security's signed indexes (newest first: a point
release drops old ABIs, so none is pinned) and fetched by `dbhive fetch`.  Every run starts
from an empty hive (packages linked), the packages are read once before timing (warm page
cache), runs alternate between the anchor and each split, and medians are quoted.  These
machines are shared with other work: the load average at the start is printed with the
figures, and beside the measured kernels/hour the CPU-bound rate (what the CPU seconds used
would give on cores of our own).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

from bench.measure import run_cmd
from scripts.realdata import DEBIAN_DBG_PKG, cache_dir, fetch_deb
from tests.support.minihive import cached_second_deb, fetch_second_deb

BIN = os.path.dirname(sys.executable)
DBHIVE = os.path.join(BIN, "dbhive")
_DBG = re.compile(r"linux-image-(.+)-dbg_[^_]+_amd64\.deb")


def release_of(path: str) -> str:
    return _DBG.fullmatch(os.path.basename(path)).group(1)


def packages(n: int) -> list[str]:
    """`n` distinct kernels' packages; the network only when the cache holds too few."""
    second = cached_second_deb() or fetch_second_deb()
    hive = cache_dir("batch", "bench-pack")
    found = [fetch_deb(DEBIAN_DBG_PKG), second["path"]]
    found += sorted(glob.glob(os.path.join(hive, "x86_64", "pack", "debian",
                                           "linux-image-*-cloud-amd64-dbg_*_amd64.deb")))
    unique = {}
    for p in found:
        unique.setdefault(release_of(p), p)
    if len(unique) < n:
        out = subprocess.run([DBHIVE, "fetch", "debian", "--suite", "bookworm", "--suite",
                              "bookworm-security", "--flavour", "cloud", "--list", "--hive",
                              hive, "--json"], check=True, capture_output=True, text=True).stdout
        for p in json.loads(out):
            if len(unique) >= n:
                break
            if p["flavour"] != "cloud-amd64" or p["release"] in unique:
                continue
            got = subprocess.run([DBHIVE, "fetch", "debian", "--suite", p["suite"],
                                  "--release", p["release"], "--hive", hive, "--json"],
                                 check=True, capture_output=True, text=True).stdout
            entry = next(e for e in json.loads(got) if e["version"] == p["version"])
            unique[p["release"]] = os.path.join(hive, entry["file"])
    if len(unique) < n:
        raise SystemExit(f"only {len(unique)} kernels available")
    return list(unique.values())[:n]


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
