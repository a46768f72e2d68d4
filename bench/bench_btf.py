"""Raw BTF -> complete DB: ours (`dbhive build <btf> --out`) next to `pahole -F btf` on the
same file (which only prints the types: the anchor of what reading BTF costs).

    .venv/bin/python -m bench.bench_btf [BTF_FILE ...] [--runs N] [--cold] [--phases]
                                        [--baseline SRC_DIR]

Default inputs: this machine's /sys/kernel/btf/vmlinux and the Debian 6.1 kernel's .BTF
(scripts/realdata.py, fetched into the cache if missing).  Whole processes, ours and
pahole alternating, median of N after one unmeasured run of each (warm page cache).
--cold: also N runs of each with the page cache dropped before every run (root; the
interpreter and its modules are read from disk again too).  --phases: where our time goes,
in one process (--jobs 1): CPU and wall per step of the build, minimum of N.  Start-up is reported
as `python -c "import dbhive.cli"` against `python -c pass`.  --baseline SRC_DIR: a third
contestant, ours from another source tree (before/after a change, in the same run).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from bench.measure import compare, median_sample, run_cmd

OURS = "ours: dbhive build"
OURS_1 = "ours, --jobs 1"
ANCHOR = "pahole -F btf"
BASELINE = "ours, --baseline tree"


def drop_caches() -> bool:
    """Drop the page cache (root only); False when not allowed."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def contestants(btf: str, out: str, baseline) -> list:
    """[(label, argv, env)]: ours (default: the surftrace tables written by a second
    process), ours in one process (--jobs 1), pahole, and ours from another source tree
    (`baseline`: a checkout of an earlier commit, imported through PYTHONPATH) if given."""
    dbhive = os.path.join(os.path.dirname(sys.executable), "dbhive")
    build = ["build", btf, "--out", out, "--no-progress"]
    out = [(OURS, [dbhive] + build, None), (OURS_1, [dbhive] + build + ["--jobs", "1"], None),
           (ANCHOR, [shutil.which("pahole"), "-F", "btf", btf], None)]
    if baseline:
        # what the `dbhive` entry point runs, the other tree first on the path (in place
        # of -c's current directory, which may be this tree)
        entry = (f"import sys; sys.path[0] = {os.path.abspath(baseline)!r}; import dbhive; "
                 f"assert dbhive.__file__.startswith(sys.path[0]), dbhive.__file__; "
                 f"from dbhive.cli import main; sys.argv[0] = 'dbhive'; sys.exit(main())")
        out.append((BASELINE, [sys.executable, "-c", entry] + build, None))
    return out


def whole_process(btf: str, runs: int, cold: bool, baseline=None) -> dict:
    """{label: [Sample]}, the contestants taking turns (the order rotates every run)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.db")
        who = contestants(btf, out, baseline)
        samples = {label: [] for label, _, _ in who}

        def one(argv, env):
            s = run_cmd(argv, env=env)
            if os.path.exists(out):
                os.unlink(out)
            return s
        if not cold:
            for _, argv, env in who:
                one(argv, env)
        for i in range(runs):
            for label, argv, env in who[i % len(who):] + who[:i % len(who)]:
                if cold:
                    drop_caches()
                samples[label].append(one(argv, env))
    return samples


def startup(runs: int) -> tuple:
    """(median wall of `python -c pass`, of `python -c "import dbhive.cli"`)."""
    import statistics
    bare, cli = [], []
    for _ in range(runs + 1):
        bare.append(run_cmd([sys.executable, "-c", "pass"]).wall)
        cli.append(run_cmd([sys.executable, "-c", "import dbhive.cli"]).wall)
    return statistics.median(bare[1:]), statistics.median(cli[1:])


def phases(btf: str, runs: int) -> list:
    """[(step, cpu s, wall s)] of one in-process `build.build` in one process (jobs=1, so
    that every step runs here), each the minimum of `runs`: the store's steps and the
    model's graph checks timed by wrapping them."""
    from dbhive import build, model as M, store
    steps = {"graph checks": (M, "check_references"),
             "write normalized tables but kt_types": (store, "_write_unspelled"),
             "write kt_types": (store, "_write_types"),
             "write surftrace tables (flattening)": (store, "_write_surftrace"),
             "create indexes": (store, "_create_indexes"),
             "write_db (all)": (store, "write_db"),
             "read + parse BTF (all)": (build, "read_types")}
    best: dict = {}
    spent: dict = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            c, w = time.process_time(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:                        # summed: a step may run more than once
                was = spent.get(name, (0.0, 0.0))
                spent[name] = (was[0] + time.process_time() - c, was[1] + time.perf_counter() - w)
        return wrapper
    originals = {name: getattr(mod, attr) for name, (mod, attr) in steps.items()}
    for name, (mod, attr) in steps.items():
        setattr(mod, attr, timed(name, originals[name]))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(runs):
                spent.clear()
                out = os.path.join(tmp, "bench.db")
                c, w = time.process_time(), time.perf_counter()
                build.build(btf, out=out, arch="x86_64", jobs=1)
                spent["total (build.build)"] = (time.process_time() - c, time.perf_counter() - w)
                os.unlink(out)
                for k, v in spent.items():
                    old = best.get(k, (1e9, 1e9))
                    best[k] = (min(old[0], v[0]), min(old[1], v[1]))
    finally:
        for name, (mod, attr) in steps.items():
            setattr(mod, attr, originals[name])
    cpu = {k: v[0] for k, v in best.items()}
    wall = {k: v[1] for k, v in best.items()}
    if "graph checks" in cpu:                   # the Python parser: checks after parsing
        rows = [("parse BTF (without the checks)",
                 cpu["read + parse BTF (all)"] - cpu["graph checks"],
                 wall["read + parse BTF (all)"] - wall["graph checks"]),
                ("graph checks", cpu["graph checks"], wall["graph checks"])]
    else:                                       # the C parser checks as it goes
        rows = [("read + parse BTF (C parser, checks included)",
                 cpu["read + parse BTF (all)"], wall["read + parse BTF (all)"])]
    inner = ("write normalized tables but kt_types", "write kt_types",
             "write surftrace tables (flattening)", "create indexes")
    for k in inner:
        rows.append((k, cpu[k], wall[k]))
    rows.append(("write_db rest (spelling, meta, commit, rename)",
                 cpu["write_db (all)"] - sum(cpu[k] for k in inner),
                 wall["write_db (all)"] - sum(wall[k] for k in inner)))
    rows.append(("build rest (identity, sha256, meta)",
                 cpu["total (build.build)"] - cpu["write_db (all)"] - cpu["read + parse BTF (all)"],
                 wall["total (build.build)"] - wall["write_db (all)"]
                 - wall["read + parse BTF (all)"]))
    rows.append(("total in process", cpu["total (build.build)"], wall["total (build.build)"]))
    return rows


def default_inputs() -> list:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from scripts import realdata
    return ["/sys/kernel/btf/vmlinux", realdata.debian_vmlinux_btf()]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("btf", nargs="*")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also runs with the page cache dropped")
    ap.add_argument("--phases", action="store_true", help="also the in-process split")
    ap.add_argument("--baseline", metavar="SRC_DIR",
                    help="also run ours from this source tree (e.g. a `git worktree` of main)")
    args = ap.parse_args()
    inputs = args.btf or default_inputs()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load average {load:.2f} at the start")
    bare, cli = startup(args.runs)
    print(f"start-up: python -c pass {bare:.3f} s, python -c 'import dbhive.cli' {cli:.3f} s "
          f"(median of {args.runs})")
    for btf in inputs:
        size = len(open(btf, "rb").read())          # /sys files have no size to stat
        print(f"\ninput: {btf} ({size / 1e6:.1f} MB)")
        for cold in (False, True) if args.cold else (False,):
            if cold and not drop_caches():
                print("cold: cannot drop the page cache (not root): skipped")
                continue
            samples = whole_process(btf, args.runs, cold, args.baseline)
            print(("cold page cache (dropped before every run)" if cold else "warm page cache")
                  + f", whole processes taking turns, median of {args.runs}:")
            print(compare([(label, median_sample(s)) for label, s in samples.items()],
                          OURS, ANCHOR))
            if args.baseline:
                o, b = median_sample(samples[OURS]), median_sample(samples[BASELINE])
                print(f"ratio ours/baseline: wall {o.wall / b.wall:.2f}x, cpu {o.cpu / b.cpu:.2f}x")
            for label, s in samples.items():
                print(f"  {label}, every run: {' '.join(f'{x.wall:.3f}' for x in s)}")
    if args.phases:                 # last: it grows this process, whose size forked children
        for btf in inputs:          # would report as their own peak RSS
            print(f"\nin process (build.build, --jobs 1) on {btf}, minimum of {args.runs}:")
            print(f"  {'step':48s} {'cpu s':>7s} {'wall s':>7s}")
            for name, c, w in phases(btf, args.runs):
                print(f"  {name:48s} {c:7.3f} {w:7.3f}")
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
