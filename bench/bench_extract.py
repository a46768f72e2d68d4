"""Package -> vmlinux: ours (dbhive.archive.extract_kernel) next to bsdtar and dpkg-deb | tar.

    .venv/bin/python -m bench.bench_extract [--deb DEB] [--rpm RPM] [--runs N]

Defaults: the cached Debian debuginfo .deb (281 MB, data.tar.xz, 587 MB vmlinux) and the big
zstd kernel-debuginfo RPM made by scripts/make_rpm_fixture.py big.  Each tool writes the
vmlinux to a file in a temp dir (page cache warm: the input is read once before timing).
    bsdtar   `bsdtar -x -q` (--fast-read: stops after the first match, as ours does); for the
             .deb, the inner data.tar.xz is piped from one bsdtar into another
    dpkg-deb `dpkg-deb --fsys-tarfile | tar -x`: reads the whole package
Ours also hashes the member (md5 / sha256 check against the package's own digest).
"""
import argparse
import glob
import os
import shlex
import sys
import tempfile

from bench.measure import compare, median_sample, run_cmd

from scripts.realdata import CACHE
RELEASE = "6.1.0-47-cloud-amd64"
OURS = ("import sys; from dbhive.archive import extract_kernel; "
        "extract_kernel(sys.argv[1], sys.argv[2])")


def warm(path: str) -> None:
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def bench(label: str, pkg: str, member: str, anchors: dict, runs: int) -> None:
    warm(pkg)
    rows = {"ours": [], **{k: [] for k in anchors}}
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        out = os.path.join(tmp, "vmlinux")
        for _ in range(runs):
            rows["ours"].append(run_cmd([sys.executable, "-c", OURS, pkg, tmp]))
            for f in os.listdir(tmp):
                os.unlink(os.path.join(tmp, f))
            for name, cmd in anchors.items():
                rows[name].append(run_cmd(["sh", "-c", cmd.format(
                    pkg=shlex.quote(pkg), member=shlex.quote(member), out=shlex.quote(out))]))
                os.unlink(out)
    print(f"\n{label}: {os.path.basename(pkg)} ({os.path.getsize(pkg) / 1e6:.0f} MB), "
          f"member {member}, {'median of %d runs' % runs if runs > 1 else 'one run'}")
    samples = [(k, median_sample(v)) for k, v in rows.items()]
    print(compare(samples, "ours", "bsdtar"))
    if "dpkg-deb|tar" in rows:
        o, a = dict(samples)["ours"], dict(samples)["dpkg-deb|tar"]
        print(f"ratio ours/dpkg-deb|tar: wall {o.wall / a.wall:.2f}x")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deb", default=(glob.glob(f"{CACHE}/linux-image-{RELEASE}-dbg_*.deb")
                                      or [None])[-1])
    ap.add_argument("--rpm", default=f"{CACHE}/rpm-fixtures/kernel-debuginfo-6.1.0-47.big.zstd"
                                     f".x86_64.rpm")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    if args.deb and os.path.exists(args.deb):
        member = f"./usr/lib/debug/boot/vmlinux-{RELEASE}"
        bench("deb (xz)", args.deb, member, {
            "bsdtar": "bsdtar -xOf {pkg} 'data.tar.*' | bsdtar -xqOf - {member} > {out}",
            "dpkg-deb|tar": "dpkg-deb --fsys-tarfile {pkg} | tar -xOf - {member} > {out}",
        }, args.runs)
    if args.rpm and os.path.exists(args.rpm):
        bench("rpm (zstd)", args.rpm, f"./usr/lib/debug/lib/modules/{RELEASE}/vmlinux", {
            "bsdtar": "bsdtar -xqOf {pkg} {member} > {out}",
        }, args.runs)


if __name__ == "__main__":
    main()
