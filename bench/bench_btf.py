"""BTF -> DB: ours (`dbhive build <btf> --out`) next to `pahole -F btf` on the same file.

    .venv/bin/python -m bench.bench_btf [BTF_FILE] [--runs N]
Default input: this machine's /sys/kernel/btf/vmlinux.  Median of N runs each, interleaved.
"""
import argparse
import os
import shutil
import sys
import tempfile

from bench.measure import compare, median_sample, run_cmd


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("btf", nargs="?", default="/sys/kernel/btf/vmlinux")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    dbhive = os.path.join(os.path.dirname(sys.executable), "dbhive")
    pahole = shutil.which("pahole")
    ours, anchor = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.db")
        for _ in range(args.runs):
            ours.append(run_cmd([dbhive, "build", args.btf, "--out", out, "--no-progress"]))
            os.unlink(out)
            anchor.append(run_cmd([pahole, "-F", "btf", args.btf]))
    print(f"input: {args.btf} ({os.path.getsize(args.btf) / 1e6:.1f} MB), median of {args.runs}")
    print(compare([("ours: dbhive build (BTF->DB)", median_sample(ours)),
                   ("pahole -F btf", median_sample(anchor))],
                  "ours: dbhive build (BTF->DB)", "pahole -F btf"))


if __name__ == "__main__":
    main()
