"""The offsets table across every kernel of a hive (what eBPF projects keep by hand)."""
from __future__ import annotations

from typing import Optional

from dbhive.errors import DbhiveError

from . import choose
from .api import Resolver
from .kernel import KernelDB


def build_matrix(paths, hive: Optional[str] = None, arch: Optional[str] = None) -> list:
    """[{"kernel": {...}, "offsets": {path: {...} | {"error": ...}}}], one per hive DB,
    sorted by (arch, release)."""
    hive = hive or choose.default_hive()
    rows = []
    for path, meta in choose.hive_entries(hive, arch):
        try:
            r = Resolver(KernelDB(path))
        except DbhiveError as e:        # a damaged DB is a row saying so, never the end
            k = {"release": meta.get("release"), "arch": meta.get("arch"),
                 "build_id": meta.get("build_id"), "db": path,
                 "flavour": meta.get("flavour"), "type_source": meta.get("type_source")}
            rows.append({"kernel": k, "error": str(e),
                         "offsets": {p: {"error": str(e)} for p in paths}})
            continue
        try:
            offs = {}
            for p, v in r.offsets(paths).items():
                offs[p] = {"error": str(v)} if isinstance(v, LookupError) else v.as_dict()
            k = r.kernel
            k["flavour"] = meta.get("flavour")
            k["type_source"] = meta.get("type_source")
            rows.append({"kernel": k, "offsets": offs})
        finally:
            r.close()
    rows.sort(key=lambda row: (row["kernel"]["arch"] or "", _release_key(row["kernel"]["release"])))
    return rows


def _release_key(release: Optional[str]):
    import re
    parts = re.split(r"(\d+)", release or "")
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]
