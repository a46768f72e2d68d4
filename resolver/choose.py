"""Choosing the DB to answer from (`resolver --db/--hive/--release`, the server, the tracer).

* `--db FILE`: that file.
* `--release R [--arch A]`: the hive's DB for that kernel (a build-id, if given, must match).
* neither: the running kernel — `uname -r`, `uname -m` and the GNU build-id from
  /sys/kernel/notes, matched against each hive DB's `meta`.  A build-id match wins; a release
  match with another build-id is used with a warning (a different build of the same
  version); a debug-flavour DB never stands for a normal kernel (nor the reverse).

Overlay DBs (kobuild's `prev.db` for custom modules): $LBC_PREVDB, else ./prev.db.  An overlay
for another kernel (release or arch) than the DB it overlays is refused (`check_overlay`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Optional

from dbhive.errors import SchemaError
from dbhive.hive import default_hive, iter_dbs  # noqa: F401 (default_hive re-exported)
from dbhive.quirks import release_says_debug
from dbhive.schema import check_version, read_meta as _read_meta

from .errors import NoKernelDB


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


def read_meta(path: str) -> Optional[dict]:
    """The meta of a DB this code can read, or None (not a DB, another schema version)."""
    try:
        meta = _read_meta(path)
        check_version(meta, path)
        return meta
    except SchemaError:
        return None


def hive_entries(hive: str, arch: Optional[str] = None) -> list:
    """[(path, meta)] of the hive's readable DBs (optionally of one arch)."""
    out = []
    for e in iter_dbs(hive):
        if arch and e.arch != arch:
            continue
        meta = read_meta(e.path)
        if meta is not None:
            out.append((e.path, meta))
    return out


def running_identity() -> Identity:
    """release/arch/build-id of the running kernel (uname and /sys/kernel/notes)."""
    from dbhive.identity import running_kernel_identity
    k = running_kernel_identity()
    return Identity(k.release, k.arch, k.build_id or None)


def is_debug_release(release: str) -> bool:
    return release_says_debug(release)


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
        meta = _read_meta(db)
        check_version(meta, db)
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


def check_overlay(path: str, meta: dict, kernel_meta: dict, kernel_label: str) -> Optional[str]:
    """Refuse (NoKernelDB) overlay DB `path` (its `meta`) when it is for another kernel than
    `kernel_meta` (release or arch; modules' release is their vermagic's first word, as
    kobuild records it).  A warning (str) when one side does not say, else None."""
    rel, krel = meta.get("release") or "", kernel_meta.get("release") or ""
    arch, karch = meta.get("arch") or "", kernel_meta.get("arch") or ""
    if rel and krel and rel != krel:
        raise NoKernelDB(f"overlay {path} is for kernel {rel}{_vermagic(meta)}, but "
                         f"{kernel_label} is for {krel}: build the overlay for {krel} "
                         f"(kobuild) or pass --no-overlay")
    if arch and karch and arch != karch:
        raise NoKernelDB(f"overlay {path} is for {arch}, but {kernel_label} is for {karch}: "
                         f"pass --no-overlay or an overlay built for {karch}")
    if not rel:
        return (f"overlay {path} does not say which kernel it is for (no vermagic): "
                f"its layouts are used unchecked")
    if not krel:
        return (f"{kernel_label} does not say its release: overlay {path} (for {rel}) is "
                f"used unchecked")
    return None


def _vermagic(meta: dict) -> str:
    """` (vermagic '...')` of an overlay's first module, as kobuild's meta lists them."""
    try:
        mods = json.loads(meta.get("modules") or "[]")
        vm = (mods[0].get("vermagic") or "").strip() if mods else ""
    except (ValueError, AttributeError, TypeError, KeyError):
        return ""
    return f" (vermagic {vm!r})" if vm else ""
