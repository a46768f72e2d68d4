#!/usr/bin/env python3
"""Benchmark: the full Go report (standard symbols with RETs, offsets, itabs) in-process,
next to `go version -m` on the same ~10 MB binary.

    .venv/bin/python -m bench.bench_go [BINARY ...] [--runs N]

Without arguments it uses tlsapp built with Go 1.24 (with DWARF, and stripped) from the test
cache, building it if needed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from resolver.golang.report import analyze_go_binary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description="Go resolver benchmark")
    ap.add_argument("binaries", nargs="*")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--go", default="1.24", help="toolchain whose `go version -m` is timed")
    args = ap.parse_args()
    from tests.support.go_builds import binary, tc
    paths = args.binaries or [binary("1.24", "tlsapp", v) for v in ("dwarf", "strip", "pie")]
    gobin = tc.go_binary(args.go)
    print(f"{'binary':<58} {'MB':>5} {'ours median ms':>15} {'go version -m ms':>17} {'ratio':>6}")
    for path in paths:
        analyze_go_binary(path)                     # warm the page cache and imports
        times = []
        for _ in range(args.runs):
            t = time.perf_counter()
            rep = analyze_go_binary(path)
            times.append((time.perf_counter() - t) * 1000)
        ours = statistics.median(times)
        t = time.perf_counter()
        subprocess.run([gobin, "version", "-m", path], capture_output=True)
        theirs = (time.perf_counter() - t) * 1000
        found = sum(1 for s in rep.symbols.values() if s)
        name = path if len(path) <= 58 else "..." + path[-55:]
        print(f"{name:<58} {os.path.getsize(path) / 1e6:5.1f} {ours:15.1f} {theirs:17.1f} "
              f"{ours / theirs:6.2f}   ({found} symbols, {rep.version}, {rep.version_source})")


if __name__ == "__main__":
    main()
