"""Real inputs for the VM tests: Debian's 5.10 (bullseye) and 6.1 (bookworm) cloud kernels,
their debuginfo packages, a hive built from them by `dbhive build --source dwarf`, and one
boot per kernel that runs every in-guest check the tests look at.

Everything is cached under $DBHIVE_TEST_CACHE/vm, or $DBHIVE_VM_CACHE (packages, images, the
hive; keyed by their inputs) so a second session boots straight away.
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys

from scripts.realdata import CACHE, deb_member, fetch_deb

from tracer.vm import debs, image, kernel, qemu, verify
from tracer.vm.cache import build_once, key_of

VM_CACHE = os.environ.get("DBHIVE_VM_CACHE") or os.path.join(CACHE, "vm")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DBHIVE = os.path.join(os.path.dirname(sys.executable), "dbhive")

R510 = "5.10.0-32-cloud-amd64"
R61 = "6.1.0-47-cloud-amd64"
IMAGE_PKG = {R510: f"linux-image-{R510}-unsigned", R61: f"linux-image-{R61}"}
OTHER = {R510: R61, R61: R510}


def apt() -> debs.Apt:
    return debs.Apt(VM_CACHE)


def dbg_deb(release: str) -> str:
    """The kernel's -dbg package: 6.1's is the shared test input (conftest), 5.10's comes
    from bullseye through the VM cache's private apt."""
    if release == R61:
        return fetch_deb(f"linux-image-{R61}-dbg")
    return apt().fetch(f"linux-image-{release}-dbg")


def dbg_btf(release: str) -> str:
    """The raw .BTF of the -dbg package's vmlinux (dpkg-deb | tar, then objcopy: neither is
    our code)."""
    out = os.path.join(VM_CACHE, f"vmlinux-{release}.btf")
    if os.path.exists(out):
        return out
    vmlinux = deb_member(dbg_deb(release), f"/usr/lib/debug/boot/vmlinux-{release}",
                         f"vm-vmlinux-{release}")
    scratch = out + ".scratch"
    subprocess.run(["objcopy", "--dump-section", f".BTF={out}.part", vmlinux, scratch],
                   check=True)
    os.unlink(scratch)
    os.replace(out + ".part", out)
    return out


def _dbhive_digest() -> str:
    """The builder's sources: a change to them rebuilds the cached hive."""
    h = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(ROOT, "dbhive", "**", "*.py"), recursive=True)):
        with open(path, "rb") as fh:
            h.update(fh.read())
    return h.hexdigest()


def hive() -> str:
    """A hive with both kernels' DBs, each built by `dbhive build <-dbg .deb> --source dwarf`."""
    debs_ = [dbg_deb(R510), dbg_deb(R61)]
    key = key_of("test-hive", [(os.path.basename(d), os.path.getsize(d)) for d in debs_],
                 _dbhive_digest())

    def make(out: str) -> None:
        for deb in debs_:
            p = subprocess.run([DBHIVE, "build", deb, "--source", "dwarf", "--hive", out,
                                "--distro", "debian"], capture_output=True, text=True)
            assert p.returncode == 0, f"dbhive build {deb}: {p.stderr}"

    return build_once(os.path.join(VM_CACHE, f"hive-{key}"), make, is_dir=True)


def db_path(hive_dir: str, release: str) -> str:
    return os.path.join(hive_dir, "x86_64", "db", "debian", f"info-{release}.db")


def db_meta(path: str) -> dict:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT key, value FROM meta"))
    finally:
        conn.close()


def unpacked_510(dest: str) -> tuple:
    """The 5.10 image and headers packages unpacked into one tree, as an installed system
    has them: (vmlinuz, lib/modules/R) for the local-files form."""
    pk = [apt().fetch(IMAGE_PKG[R510]), apt().fetch(f"linux-headers-{R510}")]
    for dep in debs.depends_names(debs.control(pk[1])):
        if dep.startswith(("linux-headers-", "linux-kbuild-")):
            pk.append(apt().fetch(dep))
    for deb in pk:
        debs.extract(deb, dest)
    return (os.path.join(dest, "boot", f"vmlinuz-{R510}"),
            os.path.join(dest, "lib", "modules", R510))


def guest_hive(hive_dir: str, release: str, dest: str) -> str:
    """The hive a guest gets: its kernel's real DB, and a decoy filed first: a copy of the
    other kernel's DB relabelled with this release (so only the build-id tells them apart)."""
    real = os.path.join(dest, "x86_64", "db", "debian")
    decoy = os.path.join(dest, "x86_64", "db", "a-decoy")
    os.makedirs(real)
    os.makedirs(decoy)
    shutil.copy(db_path(hive_dir, release), real)
    fake = os.path.join(decoy, f"info-{release}.db")
    shutil.copy(db_path(hive_dir, OTHER[release]), fake)
    conn = sqlite3.connect(fake)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'release'", (release,))
    conn.close()
    return dest


def our_btf(hive_dir: str, release: str, dest: str) -> str:
    """Our BTF of RELEASE: `dbhive btf` of its DWARF-built DB in the hive, written in DEST."""
    out = os.path.join(dest, f"ours-{release}.btf")
    if not os.path.exists(out):
        p = subprocess.run([DBHIVE, "btf", db_path(hive_dir, release), "-o", out],
                           capture_output=True, text=True)
        assert p.returncode == 0, f"dbhive btf {release}: {p.stderr}"
    return out


# proof 5: the CO-RE programs, relocated by libbpf against each BTF (btf_custom_path), in the guest
CORE_BTF = ("own", "ours", "other")   # the guest kernel's /sys/kernel/btf/vmlinux, ours of
                                      # that kernel, ours of the other kernel


def add_core_steps(job: qemu.Job, core: dict, btfs: dict) -> None:
    """Steps core-<variant> running the libbpf loader (data/core-src, built on the host against
    the guest's libbpf1: both bookworm's) with every CO-RE program: its JSON in
    files/core-<variant>-<program>.json.  CORE: core_fixtures(); BTFS: variant -> host BTF
    file (none for `own`)."""
    from tests.support.btfout import PROGRAMS, TRIGGER
    job.add_file("core/core_loader", core["core_loader"], 0o755)
    for name in PROGRAMS:
        job.add_file(f"core/{name}.bpf.o", core[name], 0o644)
    for variant in CORE_BTF:
        btf_arg = ""
        if variant != "own":
            btf_arg = " --btf " + job.add_file(f"core/{variant}.btf", btfs[variant], 0o644)
        script = "".join(
            f"/job/core/core_loader run /job/core/{name}.bpf.o{btf_arg} --trigger "
            f"{TRIGGER[name]} > $DBHIVE_VM_OUT/core-{variant}-{name}.json "
            f"|| echo \"{name}: loader exit $?\" >&2\n" for name in PROGRAMS)
        job.add_step(f"core-{variant}", script, timeout=300)


def boot_job(k: kernel.Kernel, hive_dir: str, ghive: str, go_probe: str, core: dict,
             core_btfs: dict):
    """Everything the tests check inside one boot of K: vm-verify's steps with the right DB
    (chosen from the hive by build-id) and crossed with the other kernel's DB, the CO-RE
    programs with each BTF (add_core_steps), and the harness's own checks."""
    job = qemu.Job()
    main = verify.plan(k, hive=ghive, go_probe=go_probe, job=job, cache=VM_CACHE)
    other = db_path(hive_dir, OTHER[k.release])
    crossed = verify.plan(k, db=other, go_probe=go_probe, job=job, prefix="crossed-",
                          reuse=main)
    job.add_file(f"hive/x86_64/db/debian/info-{OTHER[k.release]}.db", other, 0o644)
    job.add_step("bcc", "python3 -m tracer.vm.guest.bcc_probe", timeout=300)
    job.add_step("project", "dbhive list --hive /job/hive --json > $DBHIVE_VM_OUT/list.json\n"
                            "resolver --hive /job/hive offset task_struct.files "
                            "sock.__sk_common.skc_family tcp_sock.write_seq "
                            "'task_struct->files->fdt' --json", timeout=300)
    job.add_step("layout", "python3 -m tracer.vm.guest.layout_check --hive /job/hive",
                 timeout=300)
    if k.release == R510:       # one real instance (CI minutes): the oldest kernel, which has kprobes
        job.add_step("rules", "python3 -m tracer.vm.guest.attach_check --go-probe "
                              "/job/go-probe --ignore-btf --hive /job/hive", timeout=600)
    add_core_steps(job, core, core_btfs)
    job.add_step("btf-blob", "cp /sys/kernel/btf/vmlinux $DBHIVE_VM_OUT/btf", timeout=60)
    job.add_step("fails", "echo to-stderr >&2; echo to-stdout; exit 3", timeout=60)
    job.add_step("hangs", "sleep 120", timeout=3)
    return job, main, crossed


def boot(k: kernel.Kernel, job: qemu.Job) -> qemu.Run:
    run = qemu.run(k, image.base_image(VM_CACHE), job, cache=VM_CACHE, timeout=1800,
                   progress=lambda m: print(f"vm {k.release}: {m}", file=sys.stderr))
    print(f"vm {k.release}: {run.accel}, userspace at {run.timings['to_userspace']} s, "
          f"total {run.timings['total']} s; steps: "
          + ", ".join(f"{n} {s.seconds}s" for n, s in run.steps.items()), file=sys.stderr)
    return run
