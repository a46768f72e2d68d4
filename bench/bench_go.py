#!/usr/bin/env python3
"""Benchmark: the full Go report (standard symbols with RETs, offsets, itabs) in-process,
next to `go version -m` on the same binary, with and without reading the runtime type
descriptors — the three alternating in one run, medians.

    .venv/bin/python -m bench.bench_go [BINARY ...] [--runs N]
    .venv/bin/python -m bench.bench_go --sweep      # descriptors vs DWARF on every toolchain

Without arguments it uses tlsapp built with Go 1.24 (with DWARF — the 9.5 MB test binary —,
stripped, PIE) from the test cache, and buf 1.75.0 (a released 47 MB Go 1.27 binary from npm).

--sweep runs the checks of tests/test_go_typeinfo.py and tests/test_go_thirdparty.py on every
toolchain here (scripts/go_toolchains.py: ALL_TOOLCHAINS), every build mode, and every
third-party binary, and prints one line a case with how many requested fields the
descriptors answered.  It builds what is missing (about 20 minutes on a fresh cache).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
import traceback

from resolver.golang import report as report_mod
from resolver.golang.report import analyze_go_binary


def _without_descriptors():
    """The report as it was before descriptors were read (for the comparison)."""
    real = report_mod._descriptors
    report_mod._descriptors = lambda *a: (None, "disabled by the benchmark")
    try:
        return analyze_go_binary(_without_descriptors.path)
    finally:
        report_mod._descriptors = real


def speed(paths, runs: int, go: str) -> None:
    from tests.support.go_builds import tc
    gobin = tc.go_binary(go)
    print(f"{'binary':<44} {'MB':>5} {'report ms':>10} {'no-typeinfo ms':>15} "
          f"{'go version -m ms':>17} {'vs go':>6} {'vs before':>9}")
    for path in paths:
        analyze_go_binary(path)                     # warm the page cache and imports
        _without_descriptors.path = path
        ours, before, theirs = [], [], []
        for _ in range(runs):                       # alternate: same machine state for each
            t = time.perf_counter()
            rep = analyze_go_binary(path)
            ours.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            _without_descriptors()
            before.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            subprocess.run([gobin, "version", "-m", path], capture_output=True)
            theirs.append((time.perf_counter() - t) * 1000)
        o, b, g = (statistics.median(x) for x in (ours, before, theirs))
        name = path if len(path) <= 44 else "..." + path[-41:]
        ti = rep.typeinfo
        print(f"{name:<44} {os.path.getsize(path) / 1e6:5.1f} {o:10.1f} {b:15.1f} {g:17.1f} "
              f"{o / g:6.2f} {o / b:9.2f}   ({rep.version}; {ti['from_typeinfo']}/"
              f"{ti['requested']} offsets from descriptors, {ti['typeinfo_answered']} answered)")


def sweep() -> int:
    from tests import test_go_thirdparty as third
    from tests import test_go_typeinfo as typ
    from tests.support.go_builds import THIRD_PARTY, tc
    failures = 0

    def run(label, fn, *args):
        nonlocal failures
        t = time.perf_counter()
        try:
            out = fn(*args)
            status = "ok"
        except Exception as exc:            # report every case, then fail at the end
            out, status = None, f"FAIL {type(exc).__name__}: {str(exc)[:160]}"
            failures += 1
            traceback.print_exc()
        dt = time.perf_counter() - t
        extra = ""
        if out is not None and hasattr(out, "typeinfo"):
            extra = (f"{out.typeinfo['typeinfo_answered']}/{out.typeinfo['requested']} answered "
                     f"by descriptors, {out.typeinfo['from_typeinfo']} reported from them")
        elif isinstance(out, int):
            extra = f"{out} structs equal to DWARF"
        print(f"{label:<44} {status:<6} {dt:6.1f}s  {extra}", flush=True)

    for case in typ.cases(tc.ALL_TOOLCHAINS):
        run("dwarf-twin go{} {} {}".format(*case), typ.check_against_dwarf, *case)
    for t in tc.ALL_TOOLCHAINS:
        run(f"closure go{t} tlsapp", typ.closure_check, t, "tlsapp")
    for name in THIRD_PARTY:
        run(f"third-party {name}", third.check, name)
    for name in ("esbuild-0.8.57", "esbuild-0.13.15", "esbuild-0.14.54"):
        run(f"encoding probe {name}", third.probe_check, name)
    print(f"{failures} failed")
    return failures


def main() -> None:
    ap = argparse.ArgumentParser(description="Go resolver benchmark")
    ap.add_argument("binaries", nargs="*")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--go", default="1.24", help="toolchain whose `go version -m` is timed")
    ap.add_argument("--sweep", action="store_true",
                    help="check descriptors against DWARF on every toolchain and binary")
    args = ap.parse_args()
    if args.sweep:
        raise SystemExit(1 if sweep() else 0)
    from tests.support.go_builds import binary, third_party
    paths = args.binaries or ([binary("1.24", "tlsapp", v) for v in ("dwarf", "strip", "pie")]
                              + [third_party("buf-1.75.0")])
    speed(paths, args.runs, args.go)


if __name__ == "__main__":
    main()
