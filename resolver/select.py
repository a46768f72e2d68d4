"""Choosing the DB to answer from.

* `--db FILE`: that file.
* `--release R [--arch A]`: the hive's DB for that kernel (a build-id, if given, must match).
* neither: the running kernel — `uname -r`, `uname -m` and the GNU build-id from
  /sys/kernel/notes, matched against each hive DB's `meta`.  A build-id match wins; a release
  match with another build-id is used with a warning (a different build of the same
  version); a debug-flavour DB never stands for a normal kernel (nor the reverse).

Overlay DBs (kobuild's `prev.db` for custom modules): $LBC_PREVDB, else ./prev.db.
"""
from __future__ import annotations

import os
import re
import sqlite3
import struct
from dataclasses import dataclass, field
from typing import Optional

from dbhive.hive import default_hive, iter_dbs  # noqa: F401 (default_hive re-exported)

from .errors import NoKernelDB

NOTES = "/sys/kernel/notes"
NT_GNU_BUILD_ID = 3


@dataclass
class Identity:
    release: str
    arch: str
    build_id: Optional[str] = None
    flavour: Optional[str] = None


@dataclass
class Choice:
    path: str
    meta: dict
    warnings: list = field(default_factory=list)


def _iter_hive(hive: str):
    """(path, arch_dir) of every DB in the hive, stable order."""
    for e in iter_dbs(hive):
        yield e.path, e.arch


def read_meta(path: str) -> Optional[dict]:
    try:
        import urllib.parse
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True)
        try:
            return dict(conn.execute("SELECT key, value FROM meta").fetchall())
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


def hive_entries(hive: str, arch: Optional[str] = None) -> list:
    """[(path, meta)] of the hive's readable DBs (optionally of one arch)."""
    out = []
    for path, arch_dir in _iter_hive(hive):
        if arch and arch_dir != arch:
            continue
        meta = read_meta(path)
        if meta is not None:
            out.append((path, meta))
    return out


def gnu_build_id(notes: bytes) -> Optional[str]:
    """The GNU build-id in an ELF note blob (/sys/kernel/notes), hex, or None."""
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        pos += 12
        name = notes[pos:pos + namesz]
        pos += (namesz + 3) & ~3
        desc = notes[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if ntype == NT_GNU_BUILD_ID and name.rstrip(b"\0") == b"GNU":
            return desc.hex()
    return None


def running_identity() -> Identity:
    """release/arch/build-id of the running kernel: uname and /sys/kernel/notes.

    Read here directly rather than through dbhive.identity, whose imports (ELF and archive
    readers) would cost more than the whole lookup; tests check both agree."""
    u = os.uname()
    bid = None
    try:
        with open(NOTES, "rb") as fh:
            bid = gnu_build_id(fh.read())
    except OSError:
        pass
    return Identity(u.release, u.machine, bid)


_DEBUG_RE = re.compile(r"(^|[+._-])debug($|[+._-])")


def is_debug_release(release: str) -> bool:
    return bool(_DEBUG_RE.search(release or ""))


def _is_debug_db(meta: dict) -> bool:
    return meta.get("flavour") == "debug" or is_debug_release(meta.get("release", ""))


def _describe(entries: list) -> str:
    if not entries:
        return "the hive has no DBs"
    items = [f"{m.get('release', '?')} {m.get('arch', '?')}"
             f"{' (debug)' if _is_debug_db(m) else ''}" for _p, m in entries[:20]]
    more = f" and {len(entries) - 20} more" if len(entries) > 20 else ""
    return "the hive has: " + ", ".join(items) + more


def choose_db(db: Optional[str] = None, hive: Optional[str] = None,
              release: Optional[str] = None, arch: Optional[str] = None,
              build_id: Optional[str] = None) -> Choice:
    if db:
        if not os.path.isfile(db):
            raise NoKernelDB(f"no such DB file: {db}")
        meta = read_meta(db)
        if meta is None:
            raise NoKernelDB(f"{db} is not a dbhive kernel DB (no readable meta table)")
        return Choice(db, meta)
    hive = hive or default_hive()
    warnings = []
    if release:
        ident = Identity(release, arch or os.uname().machine, build_id)
        running = False
    else:
        ident = running_identity()
        if arch:
            ident.arch = arch
        if build_id:
            ident.build_id = build_id
        running = True
    want_debug = (ident.flavour == "debug") if ident.flavour else is_debug_release(ident.release)
    all_entries = hive_entries(hive)
    entries = [(p, m) for p, m in all_entries
               if m.get("arch") == ident.arch and _is_debug_db(m) == want_debug]
    bid = (ident.build_id or "").lower() or None
    if bid:
        by_id = [(p, m) for p, m in entries if (m.get("build_id") or "").lower() == bid]
        if by_id:
            p, m = by_id[0]
            if m.get("release") != ident.release:
                warnings.append(f"build-id {bid} matches {p}, whose release is "
                                f"{m.get('release')} (looked for {ident.release})")
            return Choice(p, m, warnings)
    by_rel = [(p, m) for p, m in entries if m.get("release") == ident.release]
    if by_rel:
        p, m = by_rel[0]
        dbid = (m.get("build_id") or "").lower() or None
        if bid and dbid and dbid != bid:
            if not running and build_id:
                raise NoKernelDB(f"{ident.release} {ident.arch} is in {p} with build-id {dbid}, "
                                 f"not {bid}")
            warnings.append(f"{p} is release {ident.release} but another build "
                            f"(build-id {dbid}, running kernel {bid}): offsets may differ")
        elif running and not (bid and dbid):
            warnings.append(f"build-id not checked for {p} "
                            f"({'the DB has none' if not dbid else 'the kernel has none'})")
        return Choice(p, m, warnings)
    looked = (f"release {ident.release}, arch {ident.arch}"
              + (f", build-id {bid}" if bid else "")
              + (", debug flavour" if want_debug else ""))
    what = "the running kernel" if running else "the kernel asked for"
    raise NoKernelDB(f"no DB for {what} ({looked}) in hive {hive}: {_describe(all_entries)}; "
                     f"build one with `dbhive build <vmlinux|btf|package> --hive {hive}` "
                     f"or pass --db FILE")


def overlay_paths(overlay: Optional[str] = "auto") -> list:
    """Overlay DBs to consult before the kernel's: explicit path, or $LBC_PREVDB / ./prev.db."""
    if overlay is None:
        return []
    if overlay != "auto":
        if not os.path.isfile(overlay):
            raise NoKernelDB(f"no such overlay DB: {overlay}")
        return [overlay]
    env = os.environ.get("LBC_PREVDB")
    if env:
        return [env] if os.path.isfile(env) else []
    return ["prev.db"] if os.path.isfile("prev.db") else []
