"""C headers (vmlinux.h), ours next to the anchor in one run: `dbhive header DB -o F` against
`bpftool btf dump file BTF format c > F`, for the Debian 6.1 kernel and this machine's kernel
(DBs from their own BTF, as tests/test_cheader.py uses).

Speed: the commands alternate, warm cache, medians of --runs.  Correctness, for both headers
by the same oracles (tests/support/cheader_check.py): the structs and unions whose layout,
as clang -target bpf compiles the header, differs from pahole's view of the kernel's BTF, and
the _Static_asserts (pahole's sizes and offsets, bpftool's enumerator values) that fail.

    .venv/bin/python -m bench.bench_cheader [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

from bench.measure import compare, median_sample, run_cmd
from scripts.realdata import RUNNING_BTF, debian_vmlinux_btf
from tests.support import cheader_check as C
from tests.support.pahole_oracle import pahole_layouts
from tests.support.resolver_dbs import build_btf_db, debian_meta, running_meta

DBHIVE = os.path.join(os.path.dirname(sys.executable), "dbhive")


def bpftool_header(btf: str, dest: str) -> list:
    return ["sh", "-c", f'bpftool btf dump file "{btf}" format c > "{dest}"']


def check(header: str, btf: str, layouts: dict, asserts: str) -> tuple:
    """(layouts that differ, asserts that fail) of one header."""
    differ = C.layout_differences(layouts, C.compiled_layouts(header))
    proc = C.compile_header(header, asserts, error_limit=False)
    return len(differ), len(C.failed_asserts(proc)), differ[:3]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    kernels = {"debian 6.1": (build_btf_db(debian_vmlinux_btf(), debian_meta()),
                              debian_vmlinux_btf()),
               f"running {os.uname().release}": (build_btf_db(RUNNING_BTF, running_meta()),
                                                 RUNNING_BTF)}
    with tempfile.TemporaryDirectory(prefix="bench-cheader-") as top:
        for label, (db, btf) in kernels.items():
            ours, theirs = os.path.join(top, "ours.h"), os.path.join(top, "bpftool.h")
            jobs = {"dbhive header": [DBHIVE, "header", db, "-o", ours],
                    "bpftool format c": bpftool_header(btf, theirs)}
            samples = {k: [] for k in jobs}
            for _ in range(args.runs):
                for k, argv in jobs.items():
                    samples[k].append(run_cmd(argv))
            print(f"\n{label}: {args.runs} runs each, alternating, medians")
            print(compare([(k, median_sample(v)) for k, v in samples.items()],
                          "dbhive header", "bpftool format c"))
            layouts = pahole_layouts(btf, "btf")
            layout_text, n = C.layout_asserts(layouts, C.shared_tags(btf))
            enum_text, m = C.enum_asserts(btf)
            print(f"checks: {len(layouts)} struct/union names (pahole), {n + m} asserts")
            for name, path in (("dbhive header", ours), ("bpftool format c", theirs)):
                differ, failed, first = check(path, btf, layouts, layout_text + enum_text)
                lines = sum(1 for _ in open(path))
                print(f"  {name:18s} {lines:7d} lines  layouts differing {differ:4d}  "
                      f"asserts failing {failed:4d}  {'; '.join(first)[:300]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
