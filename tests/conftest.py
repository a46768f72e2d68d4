"""Shared fixtures: real inputs, downloaded once and cached between runs.

The cache directory is $DBHIVE_TEST_CACHE (default /var/cache/dbhive-ci).  Nothing here is
mocked: the Debian debuginfo package is fetched with `apt-get download`, its vmlinux is
extracted with dpkg-deb/tar (independently of our own extractor).
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

CACHE = os.environ.get("DBHIVE_TEST_CACHE", "/var/cache/dbhive-ci")
DEBIAN_RELEASE = "6.1.0-47-cloud-amd64"
DEBIAN_DBG_PKG = f"linux-image-{DEBIAN_RELEASE}-dbg"
RUNNING_BTF = "/sys/kernel/btf/vmlinux"


def _cache_dir() -> str:
    os.makedirs(CACHE, exist_ok=True)
    return CACHE


def fetch_deb(package: str) -> str:
    """Path of a Debian package file in the cache, downloading it with apt-get if needed."""
    cache = _cache_dir()
    found = sorted(glob.glob(os.path.join(cache, f"{package}_*.deb")))
    if not found:
        subprocess.run(["apt-get", "download", "-q", package], cwd=cache, check=True,
                       stdout=subprocess.DEVNULL)
        found = sorted(glob.glob(os.path.join(cache, f"{package}_*.deb")))
    assert found, f"apt-get download {package} produced no file in {cache}"
    return found[-1]


def deb_member(deb: str, member: str, out_name: str) -> str:
    """Extract one member of a .deb's data archive into the cache (dpkg-deb | tar)."""
    out = os.path.join(_cache_dir(), out_name)
    if not os.path.exists(out):
        tmp = out + ".part"
        with open(tmp, "wb") as fh:
            p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-O", "." + member], stdin=p1.stdout, stdout=fh,
                           check=True)
            p1.stdout.close()
            assert p1.wait() == 0
        os.replace(tmp, out)
    return out


@pytest.fixture(scope="session")
def debian_dbg_deb() -> str:
    """The real Debian kernel debuginfo package (281 MB)."""
    return fetch_deb(DEBIAN_DBG_PKG)


@pytest.fixture(scope="session")
def debian_vmlinux(debian_dbg_deb) -> str:
    """The vmlinux (DWARF 5 + .BTF) from the Debian debuginfo package."""
    return deb_member(debian_dbg_deb, f"/usr/lib/debug/boot/vmlinux-{DEBIAN_RELEASE}",
                      f"vmlinux-{DEBIAN_RELEASE}")


@pytest.fixture(scope="session")
def debian_vmlinux_btf(debian_vmlinux) -> str:
    """The raw .BTF section of the Debian vmlinux (objcopy, independent of our ELF code)."""
    out = os.path.join(_cache_dir(), f"vmlinux-{DEBIAN_RELEASE}.btf")
    if not os.path.exists(out):
        subprocess.run(["objcopy", "--dump-section", f".BTF={out}.part", debian_vmlinux,
                        os.path.join(_cache_dir(), "objcopy-scratch")], check=True)
        os.unlink(os.path.join(_cache_dir(), "objcopy-scratch"))
        os.replace(out + ".part", out)
    return out


@pytest.fixture(scope="session")
def running_btf() -> str:
    if not os.path.exists(RUNNING_BTF):
        pytest.fail(f"{RUNNING_BTF} is missing: this machine's kernel should expose its BTF")
    return RUNNING_BTF


@pytest.fixture(scope="session")
def running_db(running_btf) -> str:
    """A DB of the running kernel's BTF (cached by tests/resolver_support.py)."""
    from resolver_support import build_btf_db, running_meta
    return build_btf_db(running_btf, running_meta())


@pytest.fixture(scope="session")
def debian_db(debian_vmlinux_btf) -> str:
    """A DB of the Debian 6.1 kernel's BTF (cached by tests/resolver_support.py)."""
    from resolver_support import build_btf_db, debian_meta
    return build_btf_db(debian_vmlinux_btf, debian_meta())


def need_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed (the README's test command installs it)")
    return path
