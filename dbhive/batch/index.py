"""The manifest of a hive: one entry per package and per DB no package accounts for.

    {"manifest_version": 1, "builder_version": "0.1.0", "counts": {status: n},
     "entries": [{"package": "x86_64/pack/debian/x.deb", "size", "sha256", "status",
                  "release", "arch", "build_id", "flavour", "type_source", "types",
                  "structs", "functions", "db", "db_sha256", "db_size", "btf",
                  "btf_sha256", "head", "head_sha256", "alias_of", "reason"}, ...]}

`head` is the kernel's C header when it is the one written for this DB (the same input
sha256, this builder); an older one there is listed as `head_stale`.

Status: `built` (its DB is complete: same input sha256, this builder version), `alias` (the
same kernel as an earlier package in package order: no DB of its own, or - shards that ran
apart - a duplicate of the first one's), `failed` (with the recorded reason), `stale` (a DB
built from an older version of the input or by another builder), `pending` (not built yet).
Entries are sorted and hold nothing that changes between two runs over the same files
(no times), so two manifests diff cleanly (`--diff`).

Input sha256s come from the package's record while its size and mtime still match (else
the file is read); output sha256s likewise from the record, else the DB file is read.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from .. import __version__, hive as hivemod
from ..errors import InputError
from ..identity import file_sha256
from . import records
from .pack import find_packages
from .run import kernel_key

MANIFEST_VERSION = 1
STATUSES = ("built", "alias", "failed", "stale", "pending")
_FROM_META = ("release", "arch", "build_id", "flavour", "type_source", "types", "structs",
              "functions")
MAX_MANIFEST_BYTES = 1 << 30


def manifest(hive: str, verify: bool = False) -> dict:
    """The manifest of `hive`; `verify` reads every input and output again instead of
    trusting the sha256s its records hold."""
    entries, used_dbs = [], set()
    metas = {e.path: records.complete_db(e.path) for e in hivemod.iter_dbs(hive)}
    by_sha = {}
    for path, meta in metas.items():
        if meta and meta.get("source_sha256"):
            by_sha.setdefault(meta["source_sha256"], path)
    for pkg in find_packages(hive):
        rec = records.read(pkg.record_path) or {}
        reuse = records.matches_input(rec, pkg.size, pkg.mtime_ns) and rec.get("sha256")
        try:
            sha = rec["sha256"] if reuse and not verify else file_sha256(pkg.path)
        except InputError as e:
            entries.append({"package": pkg.rel, "status": "failed", "reason": str(e)})
            continue
        entry = {"package": pkg.rel, "size": pkg.size, "sha256": sha}
        db = _db_of(hive, pkg, rec, sha, by_sha, metas)
        if db:
            entry["status"] = "built"
            _describe(entry, hive, db, metas[db], rec, verify)
            used_dbs.add(db)
        elif rec.get("status") == records.ALIAS and rec.get("sha256") == sha and \
                records.complete_db(os.path.join(hive, rec.get("db", "")),
                                    build_id=rec.get("build_id")):
            entry.update(status="alias", alias_of=rec.get("alias_of", ""), db=rec["db"])
            entry.update({k: rec[k] for k in _FROM_META if rec.get(k) not in (None, "")})
        elif rec.get("status") == records.FAILED and rec.get("sha256") == sha and \
                rec.get("builder_version") == __version__:
            entry.update(status="failed", reason=rec.get("reason", ""))
        elif rec.get("db") and os.path.isfile(os.path.join(hive, rec["db"])):
            entry.update(status="stale", db=rec["db"])
        else:
            entry["status"] = "pending"
        entries.append(entry)
    for path, meta in metas.items():                # DBs no package of the hive built
        if path in used_dbs:
            continue
        entry = {"package": None, "status": "built" if meta else "stale"}
        if meta:
            _describe(entry, hive, path, meta, {}, verify)
        else:
            entry["db"] = os.path.relpath(path, hive)
        entries.append(entry)
    _mark_aliases(entries)
    entries.sort(key=lambda e: (e.get("package") or "~", e.get("db") or ""))
    counts = {s: sum(1 for e in entries if e["status"] == s) for s in STATUSES}
    return {"manifest_version": MANIFEST_VERSION, "builder_version": __version__,
            "counts": counts, "entries": entries}


def _db_of(hive: str, pkg, rec: dict, sha: str, by_sha: dict,
           metas: dict) -> Optional[str]:
    """The complete DB built from exactly this input (this file, these bytes), if any."""
    if rec.get("db") and rec.get("status") == records.BUILT:
        path = os.path.join(hive, rec["db"])
        meta = metas.get(path)
        if meta and meta.get("source_sha256") == sha:
            return path
    path = by_sha.get(sha)
    if path and records.built_from(metas[path], pkg):
        return path
    return None


def _describe(entry: dict, hive: str, db: str, meta: dict, rec: dict, verify: bool) -> None:
    entry.update({k: meta[k] for k in _FROM_META if meta.get(k) not in (None, "")})
    if not entry.get("build_id") and meta.get("btf_sha256"):
        entry["btf_input_sha256"] = meta["btf_sha256"]
    st = os.stat(db)
    entry["db"] = os.path.relpath(db, hive)
    entry["db_size"] = st.st_size
    cached = (not verify and rec.get("db") == entry["db"] and rec.get("db_size") == st.st_size
              and rec.get("db_mtime_ns") == st.st_mtime_ns and rec.get("db_sha256"))
    entry["db_sha256"] = cached or file_sha256(db)
    btf = hivemod.btf_path(hive, meta.get("arch", ""), meta.get("release", ""),
                           meta.get("flavour"))
    if os.path.isfile(btf):
        entry["btf"] = os.path.relpath(btf, hive)
        entry["btf_sha256"] = file_sha256(btf)
    head = records.head_of(hive, meta)
    if records.header_complete(hive, meta):
        entry["head"] = os.path.relpath(head, hive)
        entry["head_sha256"] = file_sha256(head)
    elif os.path.isfile(head):
        entry["head_stale"] = os.path.relpath(head, hive)


def _mark_aliases(entries: list) -> None:
    """Built entries of one kernel (shards that ran apart each built it): the first in
    package order stays `built`, the others become aliases of it."""
    first = {}
    for e in sorted(entries, key=lambda e: (e.get("package") is None, e.get("package") or "",
                                            e.get("db") or "")):
        if e["status"] != "built":
            continue
        key = kernel_key({"build_id": e.get("build_id"), "btf_sha256": e.get("btf_input_sha256")})
        if not key:
            continue
        if key in first and first[key].get("package"):
            e.update(status="alias", alias_of=first[key]["package"])
        else:
            first.setdefault(key, e)


# ----------------------------------------------------------------------------- text, diff

COLUMNS = ("status", "package", "release", "arch", "build_id", "sha256", "db", "db_sha256",
           "alias_of", "reason")


def text_lines(man: dict) -> list[str]:
    """One tab-separated line per entry, a header first (stable: diff two of them)."""
    lines = ["\t".join(c.upper() for c in COLUMNS)]
    for e in man["entries"]:
        lines.append("\t".join(str(e.get(c) or "-") for c in COLUMNS))
    return lines


def load(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise InputError(f"{path}: cannot read the manifest ({e.strerror})") from None
    try:
        man = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a dbhive manifest ({e})") from None
    if not isinstance(man, dict) or man.get("manifest_version") != MANIFEST_VERSION or \
            not isinstance(man.get("entries"), list):
        raise InputError(f"{path}: not a dbhive manifest of version {MANIFEST_VERSION}")
    return man


def _key(e: dict) -> str:
    return e.get("package") or "db:" + (e.get("db") or "")


def diff(old: dict, new: dict) -> dict:
    """What changed from `old` to `new`: entries added, removed, and changed fields."""
    a = {_key(e): e for e in old["entries"]}
    b = {_key(e): e for e in new["entries"]}
    changed = []
    for k in sorted(a.keys() & b.keys()):
        fields = {f: [a[k].get(f), b[k].get(f)] for f in sorted(a[k].keys() | b[k].keys())
                  if a[k].get(f) != b[k].get(f)}
        if fields:
            changed.append({"entry": k, "fields": fields})
    return {"added": [b[k] for k in sorted(b.keys() - a.keys())],
            "removed": [a[k] for k in sorted(a.keys() - b.keys())],
            "changed": changed}


def diff_lines(d: dict) -> list[str]:
    out = [f"+ {_key(e)}\t{e.get('status')}\t{e.get('release') or '-'}" for e in d["added"]]
    out += [f"- {_key(e)}\t{e.get('status')}\t{e.get('release') or '-'}" for e in d["removed"]]
    for c in d["changed"]:
        for f, (x, y) in c["fields"].items():
            out.append(f"~ {c['entry']}\t{f}: {x} -> {y}")
    return out
