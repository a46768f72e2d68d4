"""The packages of a hive, their identity and their shard.

A package is any file under `<hive>/<arch>/pack/<distro>/` (sub-directories included, as in
btfhub's `<distro>/<version>/<arch>/` tree) whose name does not start with a dot (temp and
hidden files).  Its identity is its path relative to the hive, e.g.
`x86_64/pack/debian/linux-image-6.1.0-47-cloud-amd64-dbg_6.1.170-3_amd64.deb`: stable, known
without reading the file, the same on every machine that mounts the hive.

Shards: package P belongs to shard `sha256(identity) mod N`.  Adding or removing packages
never moves another package to another shard, so the work finished by shard I stays shard
I's; the N shards are disjoint and together hold every package.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from ..errors import InputError

PACK = "pack"
STATE = "state"


@dataclass(frozen=True)
class Package:
    hive: str
    arch: str           # the <arch> directory it sits in
    distro: str         # the <distro> directory under pack/
    rel: str            # identity: its path relative to the hive
    size: int
    mtime_ns: int

    @property
    def path(self) -> str:
        return os.path.join(self.hive, self.rel)

    @property
    def record_path(self) -> str:
        """Where its record lives: <hive>/<arch>/state/<distro>/<path under pack/distro>.json"""
        below = os.path.relpath(self.rel, os.path.join(self.arch, PACK, self.distro))
        return os.path.join(self.hive, self.arch, STATE, self.distro, below + ".json")


def find_packages(hive: str, arches: Optional[Iterable[str]] = None,
                  distros: Optional[Iterable[str]] = None) -> list[Package]:
    """Every package of the hive (optionally only these arches / distros), sorted by
    identity."""
    arches = set(arches or ())
    distros = set(distros or ())
    found = []
    for arch in _dirs(hive):
        if arches and arch not in arches:
            continue
        pack_root = os.path.join(hive, arch, PACK)
        for distro in _dirs(pack_root):
            if distros and distro not in distros:
                continue
            top = os.path.join(pack_root, distro)
            for d, subdirs, files in os.walk(top):
                subdirs[:] = sorted(s for s in subdirs if not s.startswith("."))
                for name in files:
                    if name.startswith("."):
                        continue
                    path = os.path.join(d, name)
                    try:
                        st = os.stat(path)
                        size, mtime = st.st_size, st.st_mtime_ns
                    except FileNotFoundError:        # a dangling link: its build says so
                        size, mtime = 0, 0
                    found.append(Package(hive, arch, distro, os.path.relpath(path, hive),
                                         size, mtime))
    found.sort(key=lambda p: p.rel)
    return found


def _dirs(path: str) -> list[str]:
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if not n.startswith(".") and
                  os.path.isdir(os.path.join(path, n)))


def shard_of(identity: str, count: int) -> int:
    """The shard (0..count-1) of a package identity: a stable hash, not Python's hash()."""
    digest = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[:8], "big") % count


_SHARD = re.compile(r"(\d+)/(\d+)")


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N), 0 <= I < N."""
    m = _SHARD.fullmatch(text.strip())
    if not m:
        raise InputError(f"--shard {text!r}: expected I/N, e.g. --shard 0/4")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or i >= n:
        raise InputError(f"--shard {text}: the index must be 0..N-1 (N >= 1)")
    return i, n


def shard_from_env(count: int, environ=os.environ) -> tuple[int, int]:
    """(I, count) with I from $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job sets it;
    the count is not in the pod's environment, so it is given on the command line)."""
    raw = environ.get("JOB_COMPLETION_INDEX")
    if raw is None:
        raise InputError("--shards N takes the shard index from $JOB_COMPLETION_INDEX, which "
                         "is not set (outside an Indexed Job use --shard I/N)")
    if not raw.strip().isdigit():
        raise InputError(f"$JOB_COMPLETION_INDEX is {raw!r}, not a shard index")
    if count < 1:
        raise InputError(f"--shards {count}: needs at least one shard")
    i = int(raw)
    if i >= count:
        raise InputError(f"$JOB_COMPLETION_INDEX is {i}, but --shards {count} has indexes "
                         f"0..{count - 1}: the Job's completions must equal --shards")
    return i, count
