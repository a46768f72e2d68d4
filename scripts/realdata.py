"""The real inputs tests and benchmarks use, and where they are cached.

The cache directory is $DBHIVE_TEST_CACHE (default /var/cache/dbhive-ci).  Nothing here is
mocked: Debian packages are fetched with `apt-get download`, members are extracted with
dpkg-deb/tar (independently of our own extractor).  Files are written atomically (temp +
rename), so concurrent runs never see a partial file.

Run the scripts and benchmarks of this repository as modules from its root
(`python -m scripts.make_rpm_fixture`, `python -m bench.bench_dwarf`), so they can import
each other and the test helpers (`tests.support`).
"""
from __future__ import annotations

import glob
import os
import subprocess

CACHE = os.environ.get("DBHIVE_TEST_CACHE", "/var/cache/dbhive-ci")
DEBIAN_RELEASE = "6.1.0-47-cloud-amd64"
DEBIAN_DBG_PKG = f"linux-image-{DEBIAN_RELEASE}-dbg"
RUNNING_BTF = "/sys/kernel/btf/vmlinux"


def cache_dir(*parts: str) -> str:
    """A directory in the cache (made if needed)."""
    d = os.path.join(CACHE, *parts)
    os.makedirs(d, exist_ok=True)
    return d


def fetch_deb(package: str, arch: str = "") -> str:
    """Path of a Debian package file in the cache, downloading it with apt-get if needed.
    `arch`: a package of another Debian architecture (arm64, ...), found through apt's own
    signed indexes of that architecture kept in a private state directory of the cache:
    this machine's dpkg architectures and apt lists are left alone."""
    cache = cache_dir()
    pattern = os.path.join(cache, f"{package}_*_{arch}.deb" if arch else f"{package}_*.deb")
    found = sorted(glob.glob(pattern))
    if not found:
        opts = _foreign_apt(arch) if arch else []
        subprocess.run(["apt-get", *opts, "download", "-q",
                        f"{package}:{arch}" if arch else package], cwd=cache, check=True,
                       stdout=subprocess.DEVNULL)
        found = sorted(glob.glob(pattern))
    if not found:
        raise RuntimeError(f"apt-get download {package} produced no file in {cache}")
    return found[-1]


def _foreign_apt(arch: str) -> list:
    """apt-get options for a private state of `arch`'s indexes (updated once per call)."""
    state = cache_dir(f"apt-{arch}")
    for sub in ("lists/partial", "archives/partial"):
        os.makedirs(os.path.join(state, sub), exist_ok=True)
    opts = ["-o", f"Dir::State::Lists={state}/lists", "-o", f"Dir::Cache={state}",
            "-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures::={arch}",
            "-o", "Dir::State::status=/dev/null", "-o", "APT::Sandbox::User=root"]
    subprocess.run(["apt-get", *opts, "-q", "update"], check=True, stdout=subprocess.DEVNULL)
    return opts


def deb_member(deb: str, member: str, out_name: str) -> str:
    """Extract one member of a .deb's data archive into the cache (dpkg-deb | tar)."""
    out = os.path.join(cache_dir(), out_name)
    if not os.path.exists(out):
        tmp = f"{out}.part-{os.getpid()}"
        with open(tmp, "wb") as fh:
            p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
            subprocess.run(["tar", "-x", "-O", "." + member], stdin=p1.stdout, stdout=fh,
                           check=True)
            p1.stdout.close()
            if p1.wait() != 0:
                raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed")
        os.replace(tmp, out)
    return out


def debian_vmlinux() -> str:
    """The vmlinux (DWARF 5 + .BTF) from the Debian debuginfo package."""
    return deb_member(fetch_deb(DEBIAN_DBG_PKG), f"/usr/lib/debug/boot/vmlinux-{DEBIAN_RELEASE}",
                      f"vmlinux-{DEBIAN_RELEASE}")


def debian_vmlinux_btf() -> str:
    """The raw .BTF section of the Debian vmlinux (objcopy, independent of our ELF code)."""
    out = os.path.join(cache_dir(), f"vmlinux-{DEBIAN_RELEASE}.btf")
    if not os.path.exists(out):
        vmlinux = debian_vmlinux()
        tmp, scratch = f"{out}.part-{os.getpid()}", f"{out}.scratch-{os.getpid()}"
        subprocess.run(["objcopy", "--dump-section", f".BTF={tmp}", vmlinux, scratch],
                       check=True)
        os.unlink(scratch)
        os.replace(tmp, out)
    return out


DEBIAN_IMAGE_PKG = f"linux-image-{DEBIAN_RELEASE}"     # modules with split .BTF, no DWARF


def deb_members(deb: str, members, out_name: str) -> dict:
    """Several members of a .deb's data archive, extracted in one pass (dpkg-deb | tar)
    into a cache directory named after `out_name` and the member list; {member: path}.  The directory appears complete or
    not at all (extracted beside it, then renamed)."""
    import hashlib
    members = sorted(set(members))
    key = hashlib.sha256("\n".join([deb] + members).encode()).hexdigest()[:12]
    out = os.path.join(cache_dir(), f"{out_name}-{key}")
    paths = {m: os.path.join(out, m.lstrip("/")) for m in members}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    tmp = f"{out}.part-{os.getpid()}"
    subprocess.run(["rm", "-rf", tmp], check=True)
    os.makedirs(tmp)
    p1 = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", deb], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", tmp] + ["." + m for m in members], stdin=p1.stdout,
                   check=True)
    p1.stdout.close()
    if p1.wait() != 0:
        raise RuntimeError(f"dpkg-deb --fsys-tarfile {deb} failed")
    subprocess.run(["rm", "-rf", out], check=True)
    os.replace(tmp, out)
    return paths
