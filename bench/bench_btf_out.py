"""BTF out of the hive, ours next to the anchor in one run (alternating, warm cache,
medians):

  1. full BTF of the Debian 6.1 kernel from its DWARF-built DB (`dbhive btf DB -o F`)
     vs `pahole --btf_encode_detached` of the vmlinux (pahole reads DWARF, we read the DB);
  2. the same end to end from DWARF (`dbhive btf VMLINUX -o F`, .BTF hidden) vs pahole;
  3. minimal BTF for one object and one kernel (`dbhive btf DB --for OBJ -o F`, the whole
     process) vs `bpftool gen min_core_btf` (which reads a full BTF file);
  4. minimal BTF for a hive of N kernels (`--hive H --all --for OBJ -o DIR`), N = 1, 4, 16, 32
     (copies of this machine's and the Debian kernel's DBs, each renamed): linear in N.

    .venv/bin/python -m bench.bench_btf_out [--runs N] [--skip-dwarf]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile

from bench.measure import compare, median_sample, run_cmd
from scripts.realdata import debian_vmlinux, debian_vmlinux_btf
from tests.support.btfout import (core_fixtures, dwarf_hive, hive_files, pahole_detached,
                                  vmlinux_without_btf)
from tests.support.resolver_dbs import build_btf_db, debian_meta, running_meta


def warm(path: str) -> None:
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def alternate(runs: int, jobs: dict) -> dict:
    """label -> median Sample, the commands run in turn, `runs` rounds."""
    samples = {k: [] for k in jobs}
    for _ in range(runs):
        for label, argv in jobs.items():
            samples[label].append(run_cmd(argv))
    return {k: median_sample(v) for k, v in samples.items()}


def inputs() -> tuple:
    """(vmlinux, vmlinux without .BTF, DWARF DB, running DB, Debian BTF DB), made and cached
    by the test helpers."""
    vmlinux = debian_vmlinux()
    nobtf = vmlinux_without_btf(vmlinux)
    db, _ = hive_files(dwarf_hive(nobtf))
    running_db = build_btf_db("/sys/kernel/btf/vmlinux", running_meta())
    debian_btf_db = build_btf_db(debian_vmlinux_btf(), debian_meta())
    pahole_detached(vmlinux)
    return vmlinux, nobtf, db, running_db, debian_btf_db


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-dwarf", action="store_true", help="skip the DWARF end-to-end row")
    ap.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.prepare:
        inputs()
        return
    # Inputs are made (a DWARF read, if not cached) in a child process: a child's peak RSS
    # as wait4 reports it includes the forking parent's, which must stay small.
    run_cmd([sys.executable, "-m", "bench.bench_btf_out", "--prepare"])
    dbhive = os.path.join(os.path.dirname(sys.executable), "dbhive")
    vmlinux, nobtf, db, running_db, debian_btf_db = inputs()
    tmp = tempfile.mkdtemp(prefix="bench-btf-out-")
    try:
        full = os.path.join(tmp, "full.btf")
        run_cmd([dbhive, "btf", running_db, "-o", full])
        run_cmd([sys.executable, "-c", "import sys; from tests.support.btfout import "
                 "core_fixtures; core_fixtures(sys.argv[1])", full])
        fx = core_fixtures(full)
        for p in (vmlinux, nobtf, db):
            warm(p)
        out = os.path.join(tmp, "o.btf")
        print("machine shared with other agents (2 cores); alternating runs, warm page "
              f"cache, median of {args.runs}")
        print(f"\n1. full BTF, Debian {os.path.basename(vmlinux)}: from the DWARF-built DB vs "
              f"pahole from DWARF")
        res = alternate(args.runs, {
            "ours: dbhive btf DB": [dbhive, "btf", db, "-o", out],
            "pahole --btf_encode_detached": ["pahole", f"--btf_encode_detached={out}.p",
                                             vmlinux]})
        print(compare(list(res.items()), "ours: dbhive btf DB", "pahole --btf_encode_detached"))
        print(f"   sizes: ours {os.path.getsize(out)} bytes, pahole "
              f"{os.path.getsize(pahole_detached(vmlinux))} bytes")
        if not args.skip_dwarf:
            print("\n2. DWARF -> BTF end to end (ours reads the vmlinux with .BTF hidden)")
            res = alternate(args.runs, {
                "ours: dbhive btf VMLINUX": [dbhive, "btf", nobtf, "-o", out,
                                             "--no-progress"],
                "pahole --btf_encode_detached": ["pahole", f"--btf_encode_detached={out}.p",
                                                 vmlinux]})
            print(compare(list(res.items()), "ours: dbhive btf VMLINUX",
                          "pahole --btf_encode_detached"))
        obj = fx["core_task"]
        print(f"\n3. minimal BTF, one object ({os.path.basename(obj)}), one kernel (this one); "
              f"whole processes")
        res = alternate(max(args.runs, 5), {
            "ours: dbhive btf DB --for": [dbhive, "btf", running_db, "--for", obj, "-o", out],
            "bpftool gen min_core_btf": ["bpftool", "gen", "min_core_btf",
                                         "/sys/kernel/btf/vmlinux", out + ".b", obj]})
        print(compare(list(res.items()), "ours: dbhive btf DB --for", "bpftool gen min_core_btf"))
        print(f"   sizes: ours {os.path.getsize(out)} bytes, bpftool "
              f"{os.path.getsize(out + '.b')} bytes")
        print("\n4. minimal BTF for every kernel of a hive of N kernels (one process)")
        per = []
        for n in (1, 4, 16, 32):
            hive = os.path.join(tmp, f"hive{n}")
            for i in range(n):
                src = (running_db, debian_btf_db)[i % 2]
                dest = os.path.join(hive, "x86_64", "db", f"copy{i}", f"info-k{i}.db")
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                shutil.copy(src, dest)
                with sqlite3.connect(dest) as c:
                    c.execute("UPDATE meta SET value = value || ? WHERE key = 'release'",
                              (f"-copy{i}",))
                warm(dest)
            outdir = os.path.join(tmp, f"out{n}")
            samples, inproc = [], []
            for _ in range(args.runs):
                shutil.rmtree(outdir, ignore_errors=True)
                js = os.path.join(tmp, "out.json")
                with open(js, "w") as fh:
                    samples.append(run_cmd([dbhive, "btf", "--hive", hive, "--all", "--for",
                                            obj, "-o", outdir, "--json"], stdout=fh))
                with open(js) as fh:
                    got = json.load(fh)
                assert len(got["kernels"]) == n
                inproc.append(sum(k["seconds"] for k in got["kernels"]))
            s = median_sample(samples)
            per.append((n, s.wall, s.cpu, statistics.median(inproc)))
            print(f"   N={n:3d}: {s.wall:.3f} s wall, {s.cpu:.3f} s CPU (whole process), "
                  f"{per[-1][3]:.3f} s making the N minimal BTFs")
        print("   per kernel (making one minimal BTF, in the process): " +
              ", ".join(f"N={n} {t / n * 1000:.1f} ms" for n, _, _, t in per))
        (n0, _, c0, _), (n1, _, c1, _) = per[0], per[-1]
        print(f"   CPU per extra kernel, N={n0}->{n1}: {(c1 - c0) / (n1 - n0) * 1000:.1f} ms")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
