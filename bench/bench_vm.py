#!/usr/bin/env python3
"""Benchmark: `tracer vm-verify` on Debian's 5.10 and 6.1 cloud kernels under QEMU (TCG).

    .venv/bin/python -m bench.bench_vm [--runs N] [--kernels 5.10,6.1] [--cold] [--initramfs]

Reports, for a cached run of each kernel (median of N, the kernels alternating): boot to the
initramfs's busybox shell (the anchor: the bare boot the issue measured at ~3 s) and to the
Debian userspace, bcc's compile of the tracer's program inside, `tracer verify` inside, and
the whole vm-verify; next to the same `tracer verify` run natively on this machine's kernel
(BTF), alternating with the guest runs.

--cold     also builds everything from nothing in a scratch cache: the userland image (ours:
           mmdebstrap + pip + mke2fs; anchor: debootstrap of the same packages) and a
           kernel's disk (from its cached .debs).  Both download from the Debian mirror.
--initramfs  also measures the design not taken: the whole userland as an initramfs (boot
           to userspace and `import bcc`), next to the ext4 disk's figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from tests.support import vm as S
from tracer.vm import image, kernel, qemu, verify

NAMES = {"5.10": S.R510, "6.1": S.R61}


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def kernels_for(names):
    return {NAMES[n]: kernel.from_package(S.IMAGE_PKG[NAMES[n]], cache=S.VM_CACHE)
            for n in names}


def vm_verify_once(k, hive, go_probe):
    t = time.monotonic()
    p = verify.plan(k, hive=hive, go_probe=go_probe, cache=S.VM_CACHE)
    run = qemu.run(k, image.base_image(S.VM_CACHE), p.job, cache=S.VM_CACHE, timeout=1800)
    rep = verify.report(p, run)
    wall = time.monotonic() - t
    if not rep.ok:
        raise SystemExit(f"vm-verify {k.release} FAILED:\n{rep.text()}")
    vt = rep.verify.get("timings", {})
    return {"wall": wall, "initramfs": run.timings["to_initramfs"],
            "userspace": run.timings["to_userspace"], "compile": vt.get("compile_s"),
            "verify_step": run.step("verify").seconds, "accel": run.accel,
            "checks": len(rep.verify["checks"])}


def native_verify(go_probe):
    tracer = os.path.join(os.path.dirname(sys.executable), "tracer")
    t = time.monotonic()
    p = subprocess.run([tracer, "verify", "--go-probe", go_probe, "--json"],
                       capture_output=True, text=True)
    wall = time.monotonic() - t
    out = json.loads(p.stdout)
    if not out["ok"]:
        raise SystemExit("native tracer verify failed")
    return {"wall": wall, "compile": out["timings"].get("compile_s")}


def cached_lookup(names):
    t = time.monotonic()
    image.base_image(S.VM_CACHE)
    kernels_for(names)
    return time.monotonic() - t


def cold(names):
    scratch = tempfile.mkdtemp(prefix="bench-cold-", dir=S.VM_CACHE)
    try:
        t = time.monotonic()
        base = image.base_image(scratch)
        ours = time.monotonic() - t
        parts = base.info["times"]
        dest = os.path.join(scratch, "debootstrap-root")
        t = time.monotonic()
        subprocess.run(["debootstrap", "--variant=minbase",
                        "--include=" + ",".join(image.PACKAGES), image.SUITE, dest,
                        "http://deb.debian.org/debian"], check=True, capture_output=True)
        anchor = time.monotonic() - t
        shutil.rmtree(dest)
        print(f"cold userland image: ours {ours:.1f} s (mmdebstrap {parts['mmdebstrap_s']} s, "
              f"pip {parts['pip_s']} s, mke2fs {parts['mke2fs_s']} s); anchor: debootstrap of "
              f"the same packages alone {anchor:.1f} s")
        os.makedirs(os.path.join(scratch, "debs"))
        for n in names:
            r = NAMES[n]
            src = kernel.from_package(S.IMAGE_PKG[r], cache=S.VM_CACHE)   # its debs cached
            for f in os.listdir(os.path.join(S.VM_CACHE, "debs")):
                if f.endswith(".deb") and "-dbg_" not in f:        # image and headers
                    shutil.copy(os.path.join(S.VM_CACHE, "debs", f),
                                os.path.join(scratch, "debs"))
            t = time.monotonic()
            k = kernel.from_package(S.IMAGE_PKG[r], cache=scratch, offline=True)
            print(f"cold kernel disk {r}: {time.monotonic() - t:.1f} s "
                  f"({os.path.getsize(k.disk) >> 20} MiB sparse image; same as cached: "
                  f"{open(k.vmlinuz, 'rb').read() == open(src.vmlinuz, 'rb').read()})")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def initramfs_alternative(k):
    """Boot the whole userland as an initramfs: time to its userspace and to `import bcc`."""
    import libarchive
    base = image.base_image(S.VM_CACHE)
    work = tempfile.mkdtemp(prefix="bench-initramfs-", dir=S.VM_CACHE)
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt)
    try:
        subprocess.run(["mount", "-o", "loop,ro", base.image, mnt], check=True)
        try:
            cpio = os.path.join(work, "root.cpio")
            init = os.path.join(work, "init")
            with open(init, "w") as fh:
                fh.write("#!/bin/sh\nmount -t proc proc /proc\nmount -t devtmpfs dev /dev\n"
                         "echo DBHIVE-VM userspace\npython3 -c 'import bcc'\n"
                         "echo DBHIVE-VM bcc-imported\nbusybox poweroff -f\n")
            os.chmod(init, 0o755)
            t = time.monotonic()
            cwd = os.getcwd()
            os.chdir(mnt)
            try:
                with libarchive.file_writer(cpio, "cpio_newc") as a:
                    a.add_files(*sorted(n for n in os.listdir(".") if n != "init"))
            finally:
                os.chdir(cwd)
            os.chdir(work)
            try:
                with libarchive.file_writer(cpio + ".init", "cpio_newc") as a:
                    a.add_files("init")
            finally:
                os.chdir(cwd)
            with open(cpio, "ab") as out, open(cpio + ".init", "rb") as extra:
                shutil.copyfileobj(extra, out)    # concatenated cpio archives: the kernel reads both
            build = time.monotonic() - t
        finally:
            subprocess.run(["umount", mnt], check=True)
        cmd = ["qemu-system-x86_64", "-nodefaults", "-no-user-config", "-display", "none",
               "-no-reboot", "-m", "3072", "-smp", "2", "-cpu", "qemu64", "-accel",
               "tcg,thread=multi", "-kernel", k.vmlinuz, "-initrd", cpio, "-append",
               "console=ttyS0 panic=-1 mitigations=off rdinit=/init loglevel=4",
               "-serial", "stdio", "-monitor", "none"]
        t = time.monotonic()
        marks = {}
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        for line in p.stdout:
            s = line.decode(errors="replace")
            if s.startswith("DBHIVE-VM "):
                marks[s.split()[1]] = time.monotonic() - t
        p.wait()
        size = os.path.getsize(cpio) >> 20
        return {"cpio_mib": size, "cpio_build": build, "userspace": marks.get("userspace"),
                "bcc_import": marks.get("bcc-imported")}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description="vm-verify benchmark")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kernels", default="5.10,6.1")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--initramfs", action="store_true")
    a = ap.parse_args()
    names = a.kernels.split(",")
    from tests.support.go_builds import binary
    go_probe = binary("1.24", "tracerprobe", "dwarf")
    hive = S.hive()
    ks = kernels_for(names)
    print(f"machine: {os.cpu_count()} cores (shared with other agents while measuring), "
          f"load {os.getloadavg()[0]:.1f}; accel auto (KVM usable: {qemu.kvm_usable(S.VM_CACHE)})")
    if a.cold:
        cold(names)
    looks = [cached_lookup(names) for _ in range(3)]
    print(f"cached image + kernel lookup: {med(looks):.2f} s (median of 3)")
    res = {r: [] for r in ks}
    native = []
    for i in range(a.runs):
        for r, k in ks.items():
            res[r].append(vm_verify_once(k, hive, go_probe))
            native.append(native_verify(go_probe))
    nat_wall, nat_compile = med([n["wall"] for n in native]), med([n["compile"] for n in native])
    print(f"\nmedian of {a.runs} cached vm-verify runs per kernel (with the Go test program), "
          f"alternating with a native `tracer verify` on this machine's {os.uname().release}:")
    print(f"{'kernel':<24}{'busybox':>9}{'userspace':>11}{'bcc compile':>13}{'verify':>9}"
          f"{'total':>8}   native compile / verify")
    for r, rows in res.items():
        print(f"{r:<24}{med([x['initramfs'] for x in rows]):9.1f}"
              f"{med([x['userspace'] for x in rows]):11.1f}{med([x['compile'] for x in rows]):13.1f}"
              f"{med([x['verify_step'] for x in rows]):9.1f}{med([x['wall'] for x in rows]):8.1f}"
              f"   {nat_compile:.2f} s / {nat_wall:.2f} s   ({rows[0]['checks']} checks, "
              f"{rows[0]['accel']})")
    print("(seconds; busybox/userspace: host-measured time to the initramfs shell and to the "
          "Debian userspace; verify: the in-guest `tracer verify` step)")
    if a.initramfs:
        k = next(iter(ks.values()))
        alt = initramfs_alternative(k)
        ours = res[k.release]
        print(f"\nthe userland as an initramfs instead ({k.release}): {alt['cpio_mib']} MiB cpio "
              f"built in {alt['cpio_build']:.1f} s; userspace at {alt['userspace']:.1f} s, "
              f"`import bcc` done at {alt['bcc_import']:.1f} s (ext4 disk: userspace at "
              f"{med([x['userspace'] for x in ours]):.1f} s, 3 GiB guest RAM needed vs 2)")


if __name__ == "__main__":
    main()
