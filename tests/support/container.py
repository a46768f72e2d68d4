"""The builder image of containers/Dockerfile, built and run with Debian's podman.

No image registry is reachable from these machines, and PyPI only through this machine's own
pip set-up, so:
  * the Debian base image is made with `debootstrap --variant=minbase bookworm` from the
    Debian registry and `podman import`ed (the rootfs tarball is cached);
  * the Python dependencies are built into wheels by the host's pip and put into the build
    context (`containers/wheels`), which the Dockerfile installs from with
    PIP_OPTS="--no-index --find-links ..." (apt-get in the Dockerfile reaches the Debian
    registry itself).
podman runs with runc and a containers.conf with `default_ulimits = []` (crun fails here on
setrlimit and hybrid cgroups), on its own storage in the test cache, so the base image and
the image's layers are reused by later runs.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile

from scripts.realdata import cache_dir
from tests.support import need_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE_IMAGE = "localhost/dbhive-debian:bookworm"
IMAGE = "localhost/dbhive-builder:test"
SUITE, MIRROR = "bookworm", "http://deb.debian.org/debian"
# what the Dockerfile copies into the image
CONTEXT_FILES = ("pyproject.toml", "setup.py", "README.md", "dbhive", "resolver", "tracer", "containers")


def _dir() -> str:
    return cache_dir("batch", "podman")


def podman(*args, check=True, **kw) -> subprocess.CompletedProcess:
    need_tool("podman")
    need_tool("runc")
    conf = os.path.join(_dir(), "containers.conf")
    if not os.path.exists(conf):
        with open(conf + ".part", "w") as fh:
            fh.write("[containers]\ndefault_ulimits = []\n")
        os.replace(conf + ".part", conf)
    env = {**os.environ, "CONTAINERS_CONF": conf}
    cmd = ["podman", "--root", os.path.join(_dir(), "storage"), "--runroot",
           "/run/dbhive-batch-podman", "--runtime", "runc", *args]
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    proc = subprocess.run(cmd, env=env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n"
                             f"{(proc.stderr or '')[-4000:]}")
    return proc


class _Lock:
    """One builder of the cached images at a time (other runs wait)."""

    def __enter__(self):
        self.fh = open(os.path.join(_dir(), "lock"), "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


def base_image() -> str:
    """The Debian bookworm base image (debootstrap's rootfs, cached as a tarball)."""
    with _Lock():
        if podman("image", "exists", BASE_IMAGE, check=False).returncode == 0:
            return BASE_IMAGE
        tarball = os.path.join(_dir(), f"debian-{SUITE}-minbase.tar")
        if not os.path.exists(tarball):
            need_tool("debootstrap")
            root = tempfile.mkdtemp(prefix="rootfs-", dir=_dir())
            try:
                subprocess.run(["debootstrap", "--variant=minbase", SUITE, root, MIRROR],
                               check=True, capture_output=True, timeout=1800)
                subprocess.run(["tar", "-C", root, "-cf", tarball + ".part", "."], check=True)
                os.replace(tarball + ".part", tarball)
            finally:
                shutil.rmtree(root, ignore_errors=True)
        podman("import", tarball, BASE_IMAGE)
        return BASE_IMAGE


def wheels() -> str:
    """Wheels of the project's dependencies and build backend, made by the host's pip for
    this Python (bookworm's, as in the image); cached by the dependency list."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        key = hashlib.sha256(fh.read()).hexdigest()[:16]
    out = os.path.join(_dir(), f"wheels-{key}")
    if not os.path.isdir(out):
        tmp = tempfile.mkdtemp(prefix="wheels-", dir=_dir())
        pip = os.path.join(ROOT, ".venv", "bin", "pip")
        subprocess.run([pip, "wheel", "-q", "--wheel-dir", tmp, ROOT, "setuptools>=61",
                        "wheel"], check=True, capture_output=True, timeout=1800)
        for name in os.listdir(tmp):          # the project itself is built in the image
            if name.startswith("dbhive-"):
                os.unlink(os.path.join(tmp, name))
        os.replace(tmp, out)
    return out


def builder_image() -> str:
    """containers/Dockerfile built on the base image (podman reuses unchanged layers)."""
    base = base_image()
    with _Lock(), tempfile.TemporaryDirectory(prefix="context-", dir=_dir()) as ctx:
        for name in CONTEXT_FILES:
            src = os.path.join(ROOT, name)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(ctx, name),
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "wheels"))
            else:
                shutil.copy(src, ctx)
        shutil.copytree(wheels(), os.path.join(ctx, "containers", "wheels"))
        # the same mtimes every time, so podman's layer cache sees unchanged files as such
        for d, _, files in os.walk(ctx):
            for f in files:
                os.utime(os.path.join(d, f), (0, 0))
        podman("build", "--layers", "-f", os.path.join(ctx, "containers", "Dockerfile"),
               "--build-arg", f"BASE={base}",
               "--build-arg", "PIP_OPTS=--no-index --find-links /src/containers/wheels",
               "-t", IMAGE, ctx, timeout=3600)
    return IMAGE
