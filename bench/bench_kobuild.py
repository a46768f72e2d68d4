"""kobuild and `dbhive build --modules`: ours next to `pahole -F dwarf` on the same modules,
in one run, page cache warm; and the exhaustive proof that every module of the Debian 6.1
-dbg package lands in the kernel's DB equal to pahole (layouts) and pfunct + nm
(prototypes) on its own .ko, built with the network unreachable.

    .venv/bin/python -m bench.bench_kobuild [--runs N] [--part one|all|build] [--no-check]
                                            [--limit N]

Parts:
  one    one module: the custom dbhive_kotest.ko (built here) and Debian's bridge.ko
         (12.6 MB): `kobuild X.ko -o X.db` (the whole command: start-up, read, DB) next to
         `pahole -F dwarf X.ko`, alternating, medians of --runs (default 5)
  all    the 1121 .ko of the package (extracted once into the cache): `kobuild DIR -o
         all.db` (2 workers) next to pahole -F dwarf run on each module in turn (the anchor
         is the sum of those wall times, as a user would run it), alternating, --runs
         (default 1) each.  --limit N: N of them, spread evenly over the sorted list (every
         1121/N-th: small and large, every directory), given to kobuild as files
  build  `unshare -n dbhive build <deb> --modules all --out X.db`: wall, CPU, memory; then
         every module checked against pahole and pfunct + nm on its .ko (--no-check skips)
Columns: wall s, CPU s (user+sys, children included), peak RSS of the largest process (MB),
peak PSS of the whole process tree (MB; sampled every 50 ms).
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tempfile
import time

from bench.bench_dwarf import median, peak_pss, run, warm
from scripts.realdata import (CACHE, DEBIAN_DBG_PKG, DEBIAN_RELEASE, cache_dir, deb_member,
                              fetch_deb)

BIN = os.path.dirname(sys.executable)
BRIDGE = f"/usr/lib/debug/lib/modules/{DEBIAN_RELEASE}/kernel/net/bridge/bridge.ko"


def all_modules(deb: str) -> str:
    """Every .ko of the -dbg package, extracted once (dpkg-deb | tar) into the cache."""
    out = os.path.join(cache_dir("kobuild"), f"dbg-modules-{DEBIAN_RELEASE}")
    if not os.path.isdir(out):
        tmp = f"{out}.part-{os.getpid()}"
        os.makedirs(tmp)
        p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", tmp, "--wildcards", "*.ko"], stdin=p1.stdout,
                       check=True)
        p1.stdout.close()
        if p1.wait() != 0:
            raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed")
        os.replace(os.path.join(tmp, f"usr/lib/debug/lib/modules/{DEBIAN_RELEASE}"), out)
        subprocess.run(["rm", "-rf", tmp], check=True)
    return out


def ko_files(root: str) -> list:
    return sorted(glob.glob(os.path.join(root, "**", "*.ko"), recursive=True))


def row(label: str, s: dict, anchor: dict = None) -> str:
    ratio = f"{s['wall'] / anchor['wall']:9.2f}x" if anchor else f"{'':>10s}"
    return (f"{label:44s} {s['wall']:9.2f} {s['cpu']:9.2f} {s['rss']:10.0f} {s['pss']:11.0f} "
            f"{ratio}")


HEADER = f"{'':44s} {'wall s':>9s} {'CPU s':>9s} {'maxRSS MB':>10s} {'tree PSS MB':>11s} " \
         f"{'vs pahole':>10s}"


def part_one(runs: int, deb: str, tmp: str) -> None:
    from scripts import make_kobuild_modules
    kos = {"dbhive_kotest.ko (custom)": make_kobuild_modules.build()["dbhive_kotest"],
           "bridge.ko (Debian, 12.6 MB)": deb_member(deb, BRIDGE, f"bridge-{DEBIAN_RELEASE}.ko")}
    print(f"\n== one module (median of {runs}, alternating) ==\n{HEADER}")
    for label, ko in kos.items():
        warm(ko)
        out = os.path.join(tmp, "one.db")
        ours, theirs = [], []
        for _ in range(runs):
            theirs.append(run(["pahole", "-F", "dwarf", ko]))
            ours.append(run([os.path.join(BIN, "kobuild"), ko, "-o", out, "--no-progress"]))
            os.unlink(out)
        a = {**median(theirs), "pss": peak_pss(["pahole", "-F", "dwarf", ko])}
        b = {**median(ours),
             "pss": peak_pss([os.path.join(BIN, "kobuild"), ko, "-o", out, "--no-progress"])}
        os.unlink(out)
        print(row(f"pahole -F dwarf {label}", a))
        print(row(f"kobuild {label}", b, a))


def pahole_sweep(files: list) -> dict:
    """pahole -F dwarf on each module in turn: the sum of the wall and CPU times."""
    rows = [run(["pahole", "-F", "dwarf", f]) for f in files]
    return {"wall": sum(r["wall"] for r in rows), "cpu": sum(r["cpu"] for r in rows),
            "rss": max(r["rss"] for r in rows), "pss": max(r["pss"] for r in rows)}


def spread(files: list, limit: int) -> list:
    """`limit` of `files`, evenly spaced over the (sorted) list."""
    if limit >= len(files):
        return files
    return [files[i * len(files) // limit] for i in range(limit)]


def part_all(runs: int, deb: str, tmp: str, limit: int = 0) -> None:
    root = all_modules(deb)
    every = ko_files(root)
    files = spread(every, limit) if limit else every
    total = sum(os.path.getsize(f) for f in files)
    out = os.path.join(tmp, "all.db")
    inputs = [root] if files == every else files
    ours, theirs = [], []
    for _ in range(runs):
        # warmed again before each side: this VM's memory manager (DAMON) reclaims page
        # cache that has not been touched for a while, even with memory free
        for f in files:
            warm(f)
        theirs.append(pahole_sweep(files))
        for f in files:
            warm(f)
        ours.append(run([os.path.join(BIN, "kobuild"), *inputs, "-o", out, "--no-progress"]))
        os.unlink(out)
    a = median(theirs)              # its tree PSS: the largest module's, sampled apart
    a["pss"] = peak_pss(["pahole", "-F", "dwarf", max(files, key=os.path.getsize)])
    b = {**median(ours), "pss": peak_pss([os.path.join(BIN, "kobuild"), *inputs, "-o", out,
                                          "--no-progress"])}
    os.unlink(out)
    which = "all" if files == every else f"{len(files)} of the {len(every)}"
    print(f"\n== {which} modules of {os.path.basename(deb)} ({total / 1e6:.0f} MB of "
          f".ko; {runs} run{'s' if runs > 1 else ''} each, alternating) ==\n{HEADER}")
    print(row("pahole -F dwarf, each module (sum)", a))
    print(row(f"kobuild {'DIR' if files == every else 'FILES'} -o all.db (2 workers)", b, a))


def part_build(deb: str, tmp: str, check: bool) -> None:
    out = os.path.join(tmp, "kernel+modules.db")
    warm(deb)
    argv = ["unshare", "-n", os.path.join(BIN, "dbhive"), "build", deb, "--modules", "all",
            "--out", out, "--no-progress"]
    s = run(argv, pss=True)         # one run, no anchor: sampled as it is timed
    print(f"\n== unshare -n dbhive build {os.path.basename(deb)} --modules all ==\n{HEADER}")
    print(row("dbhive build --modules all (DWARF, 2 workers)", s))
    if check:
        check_every_module(out, all_modules(deb))


def check_every_module(db: str, root: str) -> None:
    """Each module of the DB against pahole (layouts) and pfunct + readelf (prototypes, and
    which functions there are) on its .ko.  What differs from pfunct is then compared with
    the module's own .BTF, which pahole's encoder made from the same DWARF at the kernel's
    build: a difference pahole's encoder shares is reported apart."""
    from dbhive import store
    from dbhive.archive import module_name
    from tests.support.pahole_compare import compare_with_pahole, layout_index
    from tests.support.pahole_oracle import pahole_layouts
    from tests.support.pfunct_oracle import (check_functions, normalize, our_prototypes,
                                             typedef_names)
    t0 = time.perf_counter()
    g = store.load_graph(db)
    index, typedefs = layout_index(g), typedef_names(g)
    files = ko_files(root)
    by_module: dict = {}
    for f in g.functions:
        by_module.setdefault(f.module, []).append(f)
    layouts = funcs = 0
    stats: dict = {}
    bad, as_pahole_btf = [], []
    for f in files:
        name = module_name(os.path.basename(f)[:-3])
        r = compare_with_pahole(g, pahole_layouts(f, "dwarf"), index)
        layouts += r["checked"]
        mine = by_module.get(name, [])
        funcs += len(mine)
        problems = check_functions(g, f, name, our_prototypes(_Only(g, mine)), typedefs, stats)
        if problems:
            btf = _btf_prototypes(f)
            for p in problems:
                fn = p.split(":", 1)[0]
                if "not in the DB" in p:
                    same = fn not in btf
                else:
                    ours = p.split("ours ", 1)[1].split("), pfunct", 1)[0] + ")"
                    same = ours in {repr((normalize(a), normalize(b))) for a, b in btf.get(fn, ())}
                (as_pahole_btf if same else bad).append((name, p))
        bad.extend((name, p) for p in r["problems"])
    print(f"checked {len(files)} modules on their .ko: {layouts} layouts equal pahole's; "
          f"{funcs} functions: {stats.get('exact', 0)} prototypes equal pfunct's, "
          f"{stats.get('typedef', 0)} equal once typedef names are expanded, "
          f"{stats.get('unprinted', 0)} static namesakes pfunct does not print; "
          f"{len(as_pahole_btf)} differ from pfunct as pahole's BTF encoder does; "
          f"{len(bad)} other differences ({time.perf_counter() - t0:.0f} s)")
    for name, p in as_pahole_btf[:30]:
        print(f"  as pahole's BTF: {name}: {p}")
    for name, p in bad[:30]:
        print(f"  DIFFERS: {name}: {p}")
    if bad:
        sys.exit(1)


_BTF_BASE = []


def _btf_prototypes(ko: str) -> dict:
    """{name: {(ret, args)}} of the FUNCs in a module's .BTF (pahole's encoder), read over
    the kernel's BTF."""
    from dbhive.btf.reader import read_btf, read_btf_base
    from dbhive.elf import ElfFile
    from scripts.realdata import debian_vmlinux_btf
    from tests.support.pfunct_oracle import our_prototypes
    if not _BTF_BASE:
        path = debian_vmlinux_btf()
        with open(path, "rb") as fh:
            _BTF_BASE.append(read_btf_base(fh.read(), path))
    with ElfFile(ko) as elf:
        data = elf.section_data(".BTF")
    if data is None:
        return {}
    return our_prototypes(read_btf(data, ko, base=_BTF_BASE[0]))


class _Only:
    """A graph's types with only some of its functions (our_prototypes walks .functions)."""

    def __init__(self, g, functions):
        self.types, self.functions, self.type_name = g.types, functions, g.type_name


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--part", choices=["one", "all", "build"], action="append")
    ap.add_argument("--no-check", action="store_true")
    ap.add_argument("--limit", type=int, default=0, metavar="N",
                    help="--part all: only N modules, spread over the package's (0: all)")
    args = ap.parse_args()
    parts = args.part or ["one", "all", "build"]
    deb = fetch_deb(DEBIAN_DBG_PKG)
    print(f"{os.cpu_count()} cores (shared with other work: figures are noisy), load average "
          f"{os.getloadavg()[0]:.2f} at the start")
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        if "one" in parts:
            part_one(args.runs or 5, deb, tmp)
        if "all" in parts:
            part_all(args.runs or 1, deb, tmp, args.limit)
        if "build" in parts:
            part_build(deb, tmp, not args.no_check)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
