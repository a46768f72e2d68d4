"""Debian packages for the guest, fetched with apt through a private sources list.

The host's own apt configuration is left alone: a sources list naming bookworm and bullseye
(Linux 6.1 and 5.10 live there), and lists and archives kept under the VM cache, are passed
to apt-get with `-o`.  A package already in the cache is never fetched again, so a warm cache
works offline.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Optional

from . import VMError
from .cache import locked, vm_cache

MIRROR = os.environ.get("DBHIVE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY = os.environ.get("DBHIVE_DEBIAN_SECURITY", "http://deb.debian.org/debian-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITES = ("bookworm", "bookworm-updates", "bullseye", "bullseye-updates")
SECURITY_SUITES = ("bookworm-security", "bullseye-security")
LISTS_MAX_AGE = 24 * 3600
_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def sources_list() -> str:
    signed = f" [signed-by={KEYRING}]" if os.path.exists(KEYRING) else ""
    lines = [f"deb{signed} {MIRROR} {s} main" for s in SUITES]
    lines += [f"deb{signed} {SECURITY} {s} main" for s in SECURITY_SUITES]
    return "\n".join(lines) + "\n"


class Apt:
    """apt-get/apt-cache on a private state directory under the VM cache."""

    def __init__(self, cache: Optional[str] = None):
        self.root = os.path.join(vm_cache(cache), "apt")
        self.debs = os.path.join(vm_cache(cache), "debs")
        for d in ("lists/partial", "archives/partial", "etc"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        os.makedirs(self.debs, exist_ok=True)
        self.sources = os.path.join(self.root, "etc", "sources.list")
        text = sources_list()
        if not os.path.exists(self.sources) or open(self.sources).read() != text:
            tmp = self.sources + f".{os.getpid()}"
            with open(tmp, "w") as fh:
                fh.write(text)
            os.replace(tmp, self.sources)
        self._updated = False

    def _opts(self) -> list:
        r = self.root
        return ["-o", f"Dir::Etc::sourcelist={self.sources}", "-o", "Dir::Etc::sourceparts=-",
                "-o", f"Dir::State::Lists={r}/lists", "-o", f"Dir::Cache={r}",
                "-o", "Dir::Cache::pkgcache=", "-o", "Dir::Cache::srcpkgcache=",
                "-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root",
                "-o", "Acquire::Retries=3"]

    def _run(self, tool: str, args: list, cwd: Optional[str] = None) -> str:
        if not shutil.which(tool):
            raise VMError(f"{tool} is not installed (a Debian host with apt is needed to fetch "
                          "kernel packages; give local files instead)")
        p = subprocess.run([tool, *self._opts(), *args], cwd=cwd, capture_output=True,
                           text=True)
        if p.returncode != 0:
            err = [ln for ln in p.stderr.splitlines() if ln.startswith(("E:", "Err"))]
            raise VMError(f"{tool} {' '.join(args)} failed: "
                          f"{(err or p.stderr.splitlines() or ['?'])[-1]}")
        return p.stdout

    def update(self, force: bool = False) -> None:
        stamp = os.path.join(self.root, "lists", ".updated")
        fresh = os.path.exists(stamp) and time.time() - os.path.getmtime(stamp) < LISTS_MAX_AGE
        if self._updated or (fresh and not force):
            return
        with locked(os.path.join(self.root, "update")):
            self._run("apt-get", ["update", "-q"])
            with open(stamp, "w"):
                pass
        self._updated = True

    def cached(self, package: str) -> Optional[str]:
        found = sorted(glob.glob(os.path.join(self.debs, f"{package}_*.deb")))
        return found[-1] if found else None

    def fetch(self, package: str) -> str:
        """Path of PACKAGE's .deb in the cache, downloading it if it is not there yet."""
        if not _NAME.match(package):
            raise VMError(f"not a Debian package name: {package!r}")
        hit = self.cached(package)
        if hit:
            return hit
        with locked(os.path.join(self.debs, package)):
            hit = self.cached(package)
            if hit:
                return hit
            self.update()
            tmp = tempfile.mkdtemp(prefix=".fetch.", dir=self.debs)
            try:
                try:
                    self._run("apt-get", ["download", "-q", package], cwd=tmp)
                except VMError:
                    if self._updated:
                        raise
                    self.update(force=True)       # lists a day old may miss a new upload
                    self._run("apt-get", ["download", "-q", package], cwd=tmp)
                got = glob.glob(os.path.join(tmp, f"{package}_*.deb"))
                if len(got) != 1:
                    raise VMError(f"apt-get download {package} produced {len(got)} files")
                dest = os.path.join(self.debs, os.path.basename(got[0]))
                os.replace(got[0], dest)
                return dest
            finally:
                shutil.rmtree(tmp, ignore_errors=True)


def control(deb: str) -> dict:
    """The control fields of a .deb (dpkg-deb -f)."""
    p = subprocess.run(["dpkg-deb", "-f", deb], capture_output=True, text=True)
    if p.returncode != 0:
        raise VMError(f"{deb}: not a Debian package ({p.stderr.strip().splitlines()[-1:]})")
    fields, last = {}, None
    for line in p.stdout.splitlines():
        if line[:1] in (" ", "\t") and last:
            fields[last] += "\n" + line.strip()
        elif ":" in line:
            last, _, value = line.partition(":")
            fields[last] = value.strip()
    return fields


def depends_names(fields: dict) -> list:
    """Package names in Depends (first alternative, version constraints dropped)."""
    out = []
    for item in fields.get("Depends", "").split(","):
        name = item.split("|")[0].strip().split(" ")[0].split(":")[0]
        if name:
            out.append(name)
    return out


def extract(deb: str, dest: str) -> None:
    """Unpack a .deb's data into DEST (dpkg-deb -x: symlinks and modes kept)."""
    p = subprocess.run(["dpkg-deb", "-x", deb, dest], capture_output=True, text=True)
    if p.returncode != 0:
        raise VMError(f"{deb}: cannot unpack: {p.stderr.strip()}")
