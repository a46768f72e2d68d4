"""Where the wall time of one `dbhive build` goes: the steps of a DWARF vmlinux -> DB build,
each printed with its start and end (seconds from this process's start), in the order they
end.  A profile of the serial parts the 1 -> 2 worker scaling depends on (bench_dwarf.py
gives the whole-process figures).

    .venv/bin/python -m bench.timeline [--vmlinux F] [-j N] [--btf]

--read-only: dbhive.dwarf.read_dwarf() alone (no identity, sha256 or DB).  A forked
worker's steps are listed too, marked with its pid.
"""
from __future__ import annotations

import argparse
import ast
import functools
import multiprocessing.process
import os
import shutil
import sys
import tempfile
import time

T0 = time.perf_counter()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

EVENTS: list = []


def _wrap(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*a, **k):
        start = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            ev = (label, start - T0, time.perf_counter() - T0)
            if os.getpid() == PID:
                EVENTS.append(ev)
            else:                        # a forked worker: its steps go through a file
                with open(os.path.join(WORKER_DIR, str(os.getpid())), "a") as fh:
                    fh.write(repr(ev) + "\n")
    setattr(owner, name, timed)


PID = os.getpid()
WORKER_DIR = tempfile.mkdtemp(prefix="timeline-")


def main() -> None:
    from scripts.realdata import CACHE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vmlinux", default=f"{CACHE}/vmlinux-6.1.0-47-cloud-amd64")
    ap.add_argument("-j", "--jobs", type=int, default=2)
    ap.add_argument("--source", default="dwarf")
    ap.add_argument("--read-only", action="store_true")
    args = ap.parse_args()
    t_imp = time.perf_counter()
    from dbhive import build, cli, identity, model as M, store
    from dbhive.dwarf import api, keys, parallel, reader
    EVENTS.append(("imports", t_imp - T0, time.perf_counter() - T0))
    for owner, name, label in (
            (identity, "identify", "identify"),
            (identity.Sha256Later, "__call__", "sha256 wait"),
            (build, "read_types", "read_types"),
            (reader.Reader, "__init__", "Reader()"),
            (reader.Reader, "prepare_origins", "prepare_origins"),
            (reader.Reader, "drop_sections", "drop_sections"),
            (reader.Reader, "process", "process (own share)"),
            (api, "run_parallel", "run_parallel"),
            (keys.KeyTable, "merge", "merge worker keys"),
            (keys.UnitInterner, "function_list", "function list"),
            (multiprocessing.process.BaseProcess, "join", "join worker"),
            (api, "finalize", "finalize"),
            (M, "check_references", "check_references"),
            (M, "spell_all", "spell_all"),
            (store, "write_db", "write_db"),
            (store, "_create_tables", "  create tables"),
            (store, "_write_unspelled", "  normalized rows but kt_types"),
            (store, "_write_types", "  kt_types rows"),
            (store, "_write_surftrace", "  surftrace rows"),
            (store._Sink, "finish", "  SQLite thread drain"),
    ):
        _wrap(owner, name, label)
    rc = 0
    if args.read_only:
        api.read_dwarf(args.vmlinux, jobs=args.jobs)
        EVENTS.append(("read_dwarf", 0.0, time.perf_counter() - T0))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rc = cli.main(["build", args.vmlinux, "--source", args.source, "--out",
                           os.path.join(tmp, "x.db"), "-j", str(args.jobs)],
                          standalone_mode=False)
            EVENTS.append(("cli.main", 0.0, time.perf_counter() - T0))
    for name in os.listdir(WORKER_DIR):
        with open(os.path.join(WORKER_DIR, name)) as fh:
            for line in fh:
                label, start, end = ast.literal_eval(line)
                EVENTS.append((f"[{name}] {label}", start, end))
    shutil.rmtree(WORKER_DIR)
    for label, start, end in sorted(EVENTS, key=lambda e: e[2]):
        print(f"{start:7.3f} {end:7.3f} {end - start:7.3f}  {label}")
    sys.exit(rc or 0)


if __name__ == "__main__":
    main()
