"""The VM cache: where fetched packages and built images live, and how they get there.

Every artefact is built in a temporary name inside the cache and renamed into place, under
an exclusive lock on its final name, so concurrent runs (tests, benchmarks, other users of a
shared cache) never see a half-written file and never build the same thing twice.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from typing import Callable, Iterable, Iterator, Optional

RECIPE_VERSION = "1"      # bump when an image recipe changes in a way the keys do not see


def vm_cache(path: Optional[str] = None) -> str:
    """The cache directory: PATH, else $DBHIVE_VM_CACHE, else /var/cache/dbhive/vm (root)
    or ~/.cache/dbhive/vm."""
    path = path or os.environ.get("DBHIVE_VM_CACHE")
    if not path:
        if os.geteuid() == 0:
            path = "/var/cache/dbhive/vm"
        else:
            path = os.path.join(os.path.expanduser("~"), ".cache", "dbhive", "vm")
    os.makedirs(path, exist_ok=True)
    return path


def key_of(*parts) -> str:
    """A short stable key of JSON-able parts (the inputs of an artefact)."""
    raw = json.dumps([RECIPE_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(root: str, follow_top: bool = True) -> str:
    """A digest of a directory tree: relative paths, modes, symlink targets, file contents."""
    h = hashlib.sha256()
    root = os.path.realpath(root) if follow_top else root
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(
                os.path.join(dirpath, d))]):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            h.update(f"{rel}\0{st.st_mode:o}\0".encode())
            if os.path.islink(p):
                h.update(os.readlink(p).encode())
            else:
                h.update(file_sha256(p).encode())
            h.update(b"\n")
    return h.hexdigest()


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """An exclusive lock named after PATH (held while PATH is being built)."""
    lock = path + ".lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_once(path: str, make: Callable[[str], None], is_dir: bool = False) -> str:
    """PATH, made by make(tmp) into a temporary sibling and renamed into place, unless it
    already exists.  Only one process builds it; the others wait and reuse it."""
    if os.path.exists(path):
        return path
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    with locked(path):
        if os.path.exists(path):
            return path
        tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", dir=parent)
        os.chmod(tmp, 0o755)
        target = tmp if is_dir else os.path.join(tmp, "out")
        try:
            make(target)
            os.replace(target, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_json(path: str, data) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def remove_quietly(paths: Iterable[str]) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            else:
                os.unlink(p)
