"""Where DBs live: the hive directory and its layout.

    <hive>/<arch>/db/<distro>/info-<release>.db     one DB per kernel
    <hive>/<arch>/head/<distro>/<release>.h         its C header (on request)
    <hive>/<arch>/{pack,btf,vmlinux}/               inputs and extracted artefacts (optional)

The hive is `--hive DIR` everywhere, defaulting to $DBHIVE_HOME, else /var/lib/dbhive for
root and ~/.local/share/dbhive otherwise.  A debug-flavour kernel is filed under
`info-<release>+debug.db` unless its release already says so, so it never shadows the normal
kernel of the same release.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterator, Optional

from . import quirks

DEFAULT_DISTRO = "unknown"
_SAFE = re.compile(r"[^A-Za-z0-9._+~-]")


def default_hive() -> str:
    env = os.environ.get("DBHIVE_HOME")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/lib/dbhive"
    return os.path.join(os.path.expanduser("~"), ".local", "share", "dbhive")


def safe_component(value: str, what: str) -> str:
    """A path component from untrusted text (release strings come from the input file)."""
    if not value or value in (".", "..") or _SAFE.search(value):
        cleaned = _SAFE.sub("_", value or "")
        if not cleaned or cleaned in (".", ".."):
            raise ValueError(f"cannot use {what} {value!r} in a file name")
        return cleaned
    return value


def kernel_key(release: str, flavour: Optional[str] = None) -> str:
    """The file-name stem of a kernel in the hive: its release, `+debug` added for a debug
    flavour whose release does not say so."""
    name = release
    if flavour == "debug" and not quirks.release_says_debug(release):
        name += quirks.DEBUG_FILE_SUFFIX
    return safe_component(name, "release")


def db_file_name(release: str, flavour: Optional[str] = None) -> str:
    return f"info-{kernel_key(release, flavour)}.db"


def db_path(hive: str, arch: str, distro: Optional[str], release: str,
            flavour: Optional[str] = None) -> str:
    return os.path.join(hive, safe_component(arch, "arch"), "db",
                        safe_component(distro or DEFAULT_DISTRO, "distro"),
                        db_file_name(release, flavour))


def btf_path(hive: str, arch: str, release: str, flavour: Optional[str] = None) -> str:
    """Where the build keeps a kernel's raw BTF (served by `resolver serve`'s `btf` command)."""
    return os.path.join(hive, safe_component(arch, "arch"), "btf",
                        kernel_key(release, flavour) + ".btf")


def head_path(hive: str, arch: str, distro: Optional[str], release: str,
              flavour: Optional[str] = None) -> str:
    """Where a kernel's C header (vmlinux.h, dbhive/cheader.py) goes, beside its DB:
    <arch>/head/<distro>/<release>.h.  (By distro as the DBs are: a hive can hold two DBs of
    one release, e.g. a btfhub archive's and the distro package's, and their headers differ.)"""
    return os.path.join(hive, safe_component(arch, "arch"), "head",
                        safe_component(distro or DEFAULT_DISTRO, "distro"),
                        kernel_key(release, flavour) + ".h")


def hive_of_db(db: str) -> Optional[str]:
    """The hive a DB file sits in (<hive>/<arch>/db/<distro>/info-R.db), or None."""
    parts = os.path.abspath(db).split(os.sep)
    if len(parts) >= 5 and parts[-4] and parts[-3] == "db":
        return os.sep.join(parts[:-4]) or os.sep
    return None


@dataclass
class HiveEntry:
    path: str
    arch: str
    distro: str


def iter_dbs(hive: str) -> Iterator[HiveEntry]:
    """Every DB file in a hive, in a stable order (temporary files are skipped)."""
    if not os.path.isdir(hive):
        return
    for arch in sorted(os.listdir(hive)):
        db_root = os.path.join(hive, arch, "db")
        if not os.path.isdir(db_root):
            continue
        for distro in sorted(os.listdir(db_root)):
            ddir = os.path.join(db_root, distro)
            if not os.path.isdir(ddir):
                continue
            for name in sorted(os.listdir(ddir)):
                if name.startswith("info-") and name.endswith(".db"):
                    yield HiveEntry(os.path.join(ddir, name), arch, distro)
