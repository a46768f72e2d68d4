"""One record per package: what the batch made of it.

    {"package": "x86_64/pack/debian/x.deb", "size": ..., "mtime_ns": ..., "sha256": ...,
     "status": "built" | "alias" | "failed", "builder_version": "0.1.0", "at": ISO time,
     "db": "x86_64/db/debian/info-R.db" (the primary's for an alias), "db_sha256": ...,
     "release", "arch", "build_id", "flavour", "type_source", "types", "structs", ...,
     "alias_of": package, "reason": one line, "exit_code": n, "seconds", "peak_rss",
     "kernel_bytes", "workers", "run", "head": "x86_64/head/debian/R.h" (--with-header)}

A record is a cache and a log, never the only proof: a DB counts as done when its own meta
says it was built from an input of the same sha256 by the same builder version (`complete_db`),
so a batch killed between writing a DB and its record loses nothing.  The size and mtime of
the input let a later run reuse the sha256 without reading the package again.  Each record
is its own file, replaced atomically: shards on a shared volume never write the same file.
"""
from __future__ import annotations

import datetime
import json
import os
from typing import Optional

from .. import __version__, hive as hivemod, output, schema
from ..errors import SchemaError

BUILT, ALIAS, FAILED = "built", "alias", "failed"
MAX_RECORD_BYTES = 1 << 20


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read(path: str) -> Optional[dict]:
    """The record at `path`, or None when there is none or it is unreadable (a record is
    only a cache: the run then looks at the package again)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_RECORD_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    if len(data) > MAX_RECORD_BYTES:
        return None
    try:
        rec = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def write(path: str, rec: dict) -> None:
    output.write_bytes(path, (json.dumps(rec, sort_keys=True, indent=1) + "\n").encode(),
                       mode=0o644)


def matches_input(rec: Optional[dict], size: int, mtime_ns: int) -> bool:
    """Whether the record describes the package file as it is now (same size and mtime:
    its sha256 can be reused)."""
    return bool(rec) and rec.get("size") == size and rec.get("mtime_ns") == mtime_ns \
        and isinstance(rec.get("sha256"), str)


def complete_db(path: str, source_sha256: Optional[str] = None,
                build_id: Optional[str] = None) -> Optional[dict]:
    """The meta of the DB at `path` if it is a complete DB of this schema and builder
    version (built from an input with `source_sha256`, of the kernel `build_id`, when
    given); None otherwise."""
    if not os.path.isfile(path):
        return None
    try:
        conn, meta = schema.open_db(path)
        conn.close()
    except SchemaError:
        return None
    if meta.get("builder_version") != __version__:
        return None
    try:
        if int(meta.get("types") or 0) <= 1:
            return None
    except ValueError:
        return None
    if source_sha256 is not None and meta.get("source_sha256") != source_sha256:
        return None
    if build_id is not None and meta.get("build_id", "") != build_id:
        return None
    return meta


def built_from(meta: dict, pkg) -> bool:
    """Whether a DB's meta names this package as its input (file name and distro)."""
    return meta.get("source_file") == os.path.basename(pkg.rel) and \
        meta.get("distro") == pkg.distro


def outputs_complete(hive: str, meta: dict, with_btf: bool) -> bool:
    """With --with-btf a kernel is done only when its BTF and btfhub archive are there too
    (made by a build: without them the DB is built again)."""
    if not with_btf:
        return True
    btf = hivemod.btf_path(hive, meta.get("arch", ""), meta.get("release", ""),
                           meta.get("flavour"))
    return os.path.isfile(btf) and os.path.isfile(btf[:-len(".btf")] + ".btf.tar.xz")


def header_complete(hive: str, meta: dict) -> bool:
    """Whether the kernel's C header in the hive was written for this DB (its input sha256)
    by this builder; if not, --with-header writes it from the DB (no rebuild)."""
    from .. import cheader
    return cheader.is_current(head_of(hive, meta), meta)


def head_of(hive: str, meta: dict) -> str:
    return hivemod.head_path(hive, meta.get("arch", ""), meta.get("distro"),
                             meta.get("release", ""), meta.get("flavour"))
