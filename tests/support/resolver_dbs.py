"""Shared helpers for the resolver tests: real DBs built from real inputs, and an
offset oracle composed from pahole's layouts (plus bpftool's raw dump for typedefs).

DBs are built with the project's own BTF reader and store (the same code `dbhive build`
runs) into the test cache, keyed by the input's size/mtime, so later runs reuse them.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Optional

from scripts.realdata import CACHE, DEBIAN_RELEASE

from tests.support.bpftool_oracle import bpftool_dump
from tests.support.pahole_oracle import pahole_layouts

DB_CACHE_VERSION = "2"


def _key(path: str, extra: str = "") -> str:
    st = os.stat(path)
    raw = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{extra}|{DB_CACHE_VERSION}"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for name in ("store.py", "schema.py", "surftrace.py", "model.py"):
        with open(os.path.join(root, "dbhive", name), "rb") as fh:   # changes invalidate DBs
            raw += hashlib.sha256(fh.read()).hexdigest()
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def build_btf_db(btf_path: str, meta: dict, dest: Optional[str] = None) -> str:
    """A DB from a raw BTF file (cached in the test cache unless `dest` is given)."""
    from dbhive import btf, store
    if dest is None:
        d = os.path.join(CACHE, "resolver-dbs")
        os.makedirs(d, exist_ok=True)
        dest = os.path.join(d, f"{_key(btf_path, repr(sorted(meta.items())))}.db")
        if os.path.exists(dest):
            return dest
    with open(btf_path, "rb") as fh:
        g = btf.read_btf(fh.read(), source=btf_path)
    m = dict(meta)
    m.setdefault("type_source", "btf")
    m.setdefault("source_file", btf_path)
    store.write_db(g, m, dest)
    return dest


def running_meta() -> dict:
    from resolver.choose import running_identity
    ident = running_identity()
    return {"release": ident.release, "arch": ident.arch, "build_id": ident.build_id or "",
            "flavour": "normal", "distro": "local"}


def debian_meta() -> dict:
    return {"release": DEBIAN_RELEASE, "arch": "x86_64", "build_id": "", "flavour": "cloud",
            "distro": "debian"}


# ---------------------------------------------------------------------------------------
# the oracle: offsets composed from pahole's per-struct layouts

class Absent(Exception):
    pass


class PaholeOffsets:
    """Offsets of member paths, computed only from pahole's output (and, for typedef names
    and anonymous typedef'd structs, which pahole does not print, from bpftool's dump)."""

    def __init__(self, path: str, fmt: str, btf_for_typedefs: str):
        self.layouts = pahole_layouts(path, fmt)
        recs = bpftool_dump(btf_for_typedefs)
        self._by_id = {r.id: r for r in recs}
        self._typedefs = {}
        for r in recs:
            if r.kind == "TYPEDEF" and r.name and r.name not in self._typedefs:
                self._typedefs[r.name] = r

    # typedef name -> ('layout', key) | ('anon', bpftool record)
    def _resolve_typedef(self, name: str):
        r = self._typedefs.get(name)
        for _ in range(20):
            if r is None:
                return None
            t = self._by_id.get(int(r.attrs["type_id"]))
            if t is None:
                return None
            if t.kind in ("STRUCT", "UNION"):
                if t.name:
                    return ("layout", f"{t.kind.lower()} {t.name}")
                return ("anon", t)
            if t.kind not in ("TYPEDEF", "CONST", "VOLATILE"):
                return None
            r = t
        return None

    def _container(self, type_text: str):
        t = re.sub(r"\b(const|volatile)\b", "", type_text).strip()
        t = re.sub(r"\s+", " ", t)
        if t.startswith(("struct ", "union ")) and "{" not in t and "*" not in t:
            if t in self.layouts:
                return ("layout", t)
            return None
        if re.fullmatch(r"\w+", t):
            return self._resolve_typedef(t)
        return None

    def _root(self, name: str):
        for k in ("struct", "union"):
            if f"{k} {name}" in self.layouts:
                return ("layout", f"{k} {name}")
        r = self._resolve_typedef(name)
        if r is None:
            raise Absent(f"no type {name}")
        return r

    def offset(self, path: str) -> dict:
        """{offset, size, bit_offset, bit_size} of a `.`-only member path."""
        root, *rest = path.split(".")
        cont = self._root(root)
        steps = rest
        base = 0
        i = 0
        cur = None
        while i < len(steps):
            if cont is None:
                raise Absent(f"{path}: cannot descend at {steps[i]}")
            if cont[0] == "anon":
                rec = cont[1]
                name, idx = _split_index(steps[i])
                hit = [a for (n, a) in rec.items if n == name]
                if not hit:
                    raise Absent(f"{path}: no {name}")
                a = hit[0]
                bits = int(a["bits_offset"])
                sub = self._by_id[int(a["type_id"])]
                size = int(sub.attrs.get("size", 0)) if "size" in sub.attrs else None
                cur = {"offset": base + bits // 8, "size": size, "bit_offset": None,
                       "bit_size": None}
                base = cur["offset"]
                cont = None
                i += 1
                continue
            lay = self.layouts[cont[1]][0]
            # the longest member path of this layout matching the next steps
            m = None
            for k in range(len(steps) - i, 0, -1):
                names = [_split_index(s)[0] for s in steps[i:i + k]]
                cand = ".".join(names)
                try:
                    m = lay.member(cand)
                except KeyError:
                    continue
                idx = _split_index(steps[i + k - 1])[1]
                i += k
                break
            if m is None:
                raise Absent(f"{path}: {lay.key} has no {steps[i]}")
            off = base + m.offset - (0 if base == 0 else 0)
            # pahole prints absolute offsets inside one layout; `base` is where it starts
            size = m.size
            typ = m.type
            if idx is not None:
                dims = m.array_dims
                n = 1
                for d in dims:
                    n *= d
                elem = m.size // n if n else 0
                off += idx * elem
                size = elem
            cur = {"offset": off, "size": size, "bit_offset": m.bit_offset,
                   "bit_size": m.bit_size}
            base = off
            cont = self._container(typ)
        return cur


def _split_index(step: str):
    m = re.fullmatch(r"(\w+)(?:\[(\d+)\])?", step)
    if not m:
        raise ValueError(step)
    return m.group(1), (int(m.group(2)) if m.group(2) is not None else None)
