"""This checkout against another one (an older commit): the same commands through each tree's
own venv, alternating, medians of whole-process runs, warm page cache.

    git worktree add /tmp/old <commit> && (cd /tmp/old && ./dev.sh test -k nothing)  # its venv
    .venv/bin/python -m bench.bench_versions --old /tmp/old [--runs 3]

What is timed (each a whole process, as a user runs it): reading the Debian 6.1 vmlinux's
DWARF with 2 workers (the library call both trees have), `dbhive build` of that vmlinux from
DWARF and of this machine's raw BTF, `resolver offset` and `resolver struct` on the DB, and
`resolver go` on a stripped Go binary.  Used to show that a restructuring is no slower.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from bench.measure import run_cmd
from scripts.realdata import CACHE

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VMLINUX = os.path.join(CACHE, "vmlinux-6.1.0-47-cloud-amd64")
SYS_BTF = "/sys/kernel/btf/vmlinux"


def _go_binary() -> str:
    from tests.support.go_builds import binary
    return binary("1.24", "grpcapp", "strip")


def commands(tree: str, work: str) -> dict:
    bin_ = os.path.join(tree, ".venv", "bin")
    db = os.path.join(work, f"{os.path.basename(tree)}-{abs(hash(tree))}.db")
    btf_db = db + ".btf.db"
    return {
        "read DWARF (2 workers)": [os.path.join(bin_, "python"), "-c",
                                   f"from dbhive.dwarf import read_dwarf; "
                                   f"read_dwarf({VMLINUX!r}, jobs=2)"],
        "build vmlinux (DWARF)": [os.path.join(bin_, "dbhive"), "build", VMLINUX, "--out", db,
                                  "--source", "dwarf"],
        "build raw BTF": [os.path.join(bin_, "dbhive"), "build", SYS_BTF, "--out", btf_db],
        "resolver offset": [os.path.join(bin_, "resolver"), "--db", db, "offset",
                            "task_struct.files", "sock.__sk_common.skc_family"],
        "resolver struct": [os.path.join(bin_, "resolver"), "--db", db, "struct",
                            "task_struct"],
        "resolver go (stripped)": [os.path.join(bin_, "resolver"), "go", _go_binary()],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="the other checkout (with its own .venv)")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    trees = {"old": os.path.abspath(args.old), "new": HERE}
    for t in trees.values():
        if not os.path.exists(os.path.join(t, ".venv", "bin", "dbhive")):
            sys.exit(f"{t}: no .venv with dbhive (run ./dev.sh test -k nothing there)")
    subprocess.run(["cat", VMLINUX, SYS_BTF], stdout=subprocess.DEVNULL, check=True)  # warm
    print(f"load average at start: {os.getloadavg()[0]:.2f} (2 cores; the machine may be shared)")
    with tempfile.TemporaryDirectory(prefix="bench-versions-") as work:
        cmds = {name: commands(t, work) for name, t in trees.items()}
        for name in trees:                                    # warm-up: DBs exist, caches warm
            run_cmd(cmds[name]["build vmlinux (DWARF)"])
        samples = {(n, c): [] for n in trees for c in cmds["old"]}
        for r in range(args.runs):
            for c in cmds["old"]:
                order = list(trees) if r % 2 == 0 else list(reversed(trees))
                for n in order:
                    samples[(n, c)].append(run_cmd(cmds[n][c]))
            print(f"round {r + 1} done", flush=True)
    print(f"\nmedian of {args.runs} whole-process runs, alternating, warm cache")
    print(f"{'':26s} {'old wall s':>10s} {'new wall s':>10s} {'new/old':>8s} "
          f"{'old RSS MB':>10s} {'new RSS MB':>10s}")
    for c in cmds["old"]:
        o, w = samples[("old", c)], samples[("new", c)]
        ow, nw = statistics.median(s.wall for s in o), statistics.median(s.wall for s in w)
        print(f"{c:26s} {ow:10.2f} {nw:10.2f} {nw / ow:8.2f} "
              f"{max(s.max_rss_mb for s in o):10.0f} {max(s.max_rss_mb for s in w):10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
