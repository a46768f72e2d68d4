"""The guest userland: a Debian bookworm root filesystem as an ext4 image.

Why an ext4 disk (and not an initramfs holding the whole userland, nor virtio-fs): the
userland with bcc (LLVM) is ~0.5 GB; as an initramfs the guest would unpack all of it into
RAM under TCG before init runs, and needs the RAM to hold it; an ext4 disk is read on demand
(bcc's LLVM only when it compiles), costs one `mke2fs -d` (seconds) to make, and needs no
daemon on the host (virtiofsd) nor a module the kernel may lack (Debian's cloud kernels have
no 9p).  The image is shared by every kernel; each boot uses it copy-on-write (QEMU
`snapshot=on`), so it is never modified.

    <cache>/base-<key>/
        root.img    ext4, label dbhive-root: mmdebstrap bookworm minbase + python3 (3.11),
                    python3-bpfcc, bpftool, busybox-static, kmod, libarchive13, and the
                    project's Python dependencies (pinned to the host's versions) in
                    /opt/dbhive/site, byte-compiled by the guest's python
        busybox     static busybox for the initramfs
        base.json   the recipe and what it produced (package versions, python version)

The key covers the suite, mirror, package list and pinned dependencies: change any and a new
image is made; keep them and the second run reuses the first's image.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Optional

from . import VMError
from .cache import build_once, key_of, vm_cache
from .debs import MIRROR, SECURITY

SUITE = "bookworm"
PACKAGES = ("python3", "python3-bpfcc", "bpftool", "busybox-static", "kmod", "libarchive13",
            "procps")
SITE = "/opt/dbhive/site"          # the project's Python dependencies in the guest
PIP_PLATFORMS = ("manylinux_2_36_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                 "manylinux1_x86_64", "linux_x86_64")
GUEST_PYTHON = "3.11"              # bookworm's python3


@dataclass
class Base:
    dir: str

    @property
    def image(self) -> str:
        return os.path.join(self.dir, "root.img")

    @property
    def busybox(self) -> str:
        return os.path.join(self.dir, "busybox")

    @property
    def info(self) -> dict:
        with open(os.path.join(self.dir, "base.json")) as fh:
            return json.load(fh)


def python_requirements(dist: str = "dbhive") -> list:
    """The project's runtime dependencies, pinned to the versions installed on the host
    (the guest then runs what the host's tests ran); unpinned where one is not installed."""
    out = []
    for req in importlib.metadata.requires(dist) or []:
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        name = re.split(r"[<>=!~\[ ]", spec.strip(), maxsplit=1)[0]
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(spec.strip())
    return sorted(out)


def base_key(requirements: Optional[list] = None) -> str:
    reqs = requirements if requirements is not None else python_requirements()
    return key_of("base", SUITE, MIRROR, SECURITY, sorted(PACKAGES), reqs, GUEST_PYTHON)


def base_image(cache: Optional[str] = None, progress=None, offline: bool = False) -> Base:
    """The bookworm userland image, built once per key (needs root for mmdebstrap)."""
    reqs = python_requirements()
    path = os.path.join(vm_cache(cache), f"base-{base_key(reqs)}")
    if os.path.exists(path):
        return Base(path)
    if offline:
        raise VMError(f"the guest userland image is not in the cache ({path}) and --offline "
                      "was given: run once online to build it")
    if progress:
        progress("building the guest userland image (Debian bookworm, once)")
    build_once(path, lambda out: _make_base(out, reqs), is_dir=True)
    return Base(path)


def _make_base(out: str, reqs: list) -> None:
    if os.geteuid() != 0:
        raise VMError("building the guest image needs root (mmdebstrap, device nodes); "
                      "run once as root, later runs reuse the cached image")
    tool = shutil.which("mmdebstrap")
    if not tool:
        raise VMError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    os.makedirs(out, exist_ok=True)
    root = tempfile.mkdtemp(prefix=".root.", dir=os.path.dirname(out))
    times = {}
    try:
        t = time.monotonic()
        cmd = [tool, "--variant=minbase", "--quiet", f"--include={','.join(PACKAGES)}",
               "--dpkgopt=path-exclude=/usr/share/doc/*",
               "--dpkgopt=path-exclude=/usr/share/man/*",
               "--dpkgopt=path-exclude=/usr/share/locale/*",
               SUITE, root, f"deb {MIRROR} {SUITE} main",
               f"deb {SECURITY} {SUITE}-security main"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            tail = (p.stderr.strip().splitlines() or ["?"])[-1]
            raise VMError(f"mmdebstrap {SUITE} failed: {tail}")
        times["mmdebstrap_s"] = round(time.monotonic() - t, 1)
        t = time.monotonic()
        site = os.path.join(root, SITE.lstrip("/"))
        _pip_target(site, reqs)
        times["pip_s"] = round(time.monotonic() - t, 1)
        guest_py = _chroot(root, ["python3", "-c",
                                  "import sys; print('%d.%d.%d' % sys.version_info[:3])"])
        _chroot(root, ["python3", "-m", "compileall", "-q", "-j", "0", SITE])
        for d in ("kernel", "job", "lib/modules", "usr/src"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy2(os.path.join(root, "bin", "busybox"), os.path.join(out, "busybox"))
        pkgs = _chroot(root, ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"])
        t = time.monotonic()
        make_ext4(root, os.path.join(out, "root.img"), label="dbhive-root")
        times["mke2fs_s"] = round(time.monotonic() - t, 1)
        info = {"suite": SUITE, "mirror": MIRROR, "packages": list(PACKAGES),
                "requirements": reqs, "python": guest_py.strip(),
                "installed": dict(ln.split(" ", 1) for ln in pkgs.splitlines() if " " in ln),
                "times": times, "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with open(os.path.join(out, "base.json"), "w") as fh:
            json.dump(info, fh, indent=2, sort_keys=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _pip_target(site: str, reqs: list) -> None:
    """Install the dependencies for the guest's python (3.11, x86_64) with the host's pip."""
    major, minor = GUEST_PYTHON.split(".")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
           "--disable-pip-version-check", "--target", site, "--only-binary=:all:",
           "--python-version", f"{major}.{minor}", "--implementation", "cp"]
    for plat in PIP_PLATFORMS:
        cmd += ["--platform", plat]
    p = subprocess.run(cmd + reqs, capture_output=True, text=True)
    if p.returncode != 0:
        err = [ln for ln in p.stderr.splitlines() if ln.startswith("ERROR")]
        raise VMError(f"pip could not install the guest's Python dependencies: "
                      f"{(err or p.stderr.splitlines() or ['?'])[-1]}")


def _chroot(root: str, cmd: list) -> str:
    p = subprocess.run(["chroot", root, *cmd], capture_output=True, text=True,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})
    if p.returncode != 0:
        raise VMError(f"in the guest root, {' '.join(cmd)} failed: {p.stderr.strip()[-300:]}")
    return p.stdout


def _count(tree: str) -> tuple:
    files, size = 0, 0
    for dirpath, dirnames, filenames in os.walk(tree):
        files += len(dirnames) + len(filenames)
        for n in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            size += st.st_blocks * 512
    return files, size


def make_ext4(tree: str, out: str, label: str, spare_mb: int = 128) -> None:
    """An ext4 image of TREE (mke2fs -d: ownership and modes kept, no mount needed), with
    room to spare and enough inodes for the file count.  No journal: every disk is used
    read-only or copy-on-write."""
    mke2fs = shutil.which("mke2fs") or "/sbin/mke2fs"
    files, size = _count(tree)
    size_mb = int(size * 1.15 / 2**20) + spare_mb
    inodes = int(files * 1.2) + 4096
    p = subprocess.run([mke2fs, "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0",
                        "-N", str(inodes), "-L", label, "-E", "root_owner=0:0", "-d", tree,
                        out, f"{size_mb}M"], capture_output=True, text=True)
    if p.returncode != 0:
        raise VMError(f"mke2fs -d {tree} failed: {p.stderr.strip()}")
