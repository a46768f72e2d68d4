"""Compare two BTF files as type graphs, order aside, through bpftool's reading of them (an
independent reader: our own BTF reader is never used here).

Every record gets a canonical text: a named struct/union/enum/typedef/fwd is spelled by kind
and name where it is referred to, and by its full definition (size, members with bit offsets,
bitfield widths and the canonical text of their types, enumerator values, typedef target) as
a record of its own; anonymous types are spelled out in place.  Two BTF files describe the
same graph when the multisets of those texts are equal -- ids, record order and string
order do not matter.  Array index types are left out (pahole and the kernel use `int`; a
file may pick any integer).

    a, b = canonical(path_a), canonical(path_b)
    diff = compare(a, b)        # {'named': (only in a, only in b), 'funcs': ..., ...}
"""
from __future__ import annotations

import collections
import subprocess
from dataclasses import dataclass, field
from typing import Optional

from tests.support.bpftool_oracle import bpftool_dump

NAMED = ("STRUCT", "UNION", "ENUM", "ENUM64", "TYPEDEF", "FWD")


@dataclass
class Canon:
    named: collections.Counter = field(default_factory=collections.Counter)  # definitions
    by_name: dict = field(default_factory=dict)      # (kind, name) -> [definition, ...]
    funcs: collections.Counter = field(default_factory=collections.Counter)
    func_protos: dict = field(default_factory=dict)  # name -> {proto text}
    vars: collections.Counter = field(default_factory=collections.Counter)
    datasecs: collections.Counter = field(default_factory=collections.Counter)
    decl_tags: collections.Counter = field(default_factory=collections.Counter)
    kinds: collections.Counter = field(default_factory=collections.Counter)


def _kind_word(kind: str) -> str:
    return "enum" if kind == "ENUM64" else kind.lower()


def canonical(path: str, flatten_arrays: bool = False, func_linkage: bool = True) -> Canon:
    """The canonical texts of a BTF file.  flatten_arrays: spell `T[2][3]` as `T[6]` (pahole
    flattens multi-dimensional arrays).  func_linkage: include FUNC linkage in its text."""
    recs = {r.id: r for r in bpftool_dump(path)}
    memo: dict = {}

    def ref(tid: int, depth: int = 0) -> str:
        if tid == 0:
            return "void"
        if depth > 200:
            raise ValueError(f"{path}: type id {tid}: references nest too deep")
        r = recs[tid]
        if r.name and r.kind in NAMED:
            if r.kind == "FWD":
                return f"fwd {r.attrs['fwd_kind']} {r.name}"
            return f"{_kind_word(r.kind)} {r.name}"
        key = (tid, flatten_arrays)
        if key in memo:
            return memo[key]
        a = r.attrs
        k = r.kind
        if k == "INT":
            s = f"int '{r.name}' {a['size']} {a['nr_bits']}@{a['bits_offset']} {a['encoding']}"
        elif k == "FLOAT":
            s = f"float '{r.name}' {a['size']}"
        elif k == "PTR":
            s = "* " + ref(int(a["type_id"]), depth + 1)
        elif k in ("CONST", "VOLATILE", "RESTRICT"):
            s = k.lower() + " " + ref(int(a["type_id"]), depth + 1)
        elif k == "TYPE_TAG":
            s = f"tag({r.name}) " + ref(int(a["type_id"]), depth + 1)
        elif k == "ARRAY":
            n, elem = int(a["nr_elems"]), int(a["type_id"])
            if flatten_arrays:
                while recs.get(elem) is not None and recs[elem].kind == "ARRAY":
                    n *= int(recs[elem].attrs["nr_elems"])
                    elem = int(recs[elem].attrs["type_id"])
            s = f"[{n}] " + ref(elem, depth + 1)
        elif k == "FUNC_PROTO":
            ps = ", ".join(f"{n or ''}: {ref(int(pa['type_id']), depth + 1)}"
                           for n, pa in r.items)
            s = f"fn({ps}) -> " + ref(int(a["ret_type_id"]), depth + 1)
        elif k in ("STRUCT", "UNION", "ENUM", "ENUM64", "TYPEDEF"):      # anonymous
            s = body(r, depth + 1)
        else:
            s = f"{k} {r.name}"
        memo[key] = s
        return s

    def body(r, depth: int = 0) -> str:
        a = r.attrs
        k = r.kind
        if k in ("STRUCT", "UNION"):
            ms = "; ".join(f"{n or ''} {ma['bits_offset']}:{ma.get('bitfield_size', 0)} "
                           f"{ref(int(ma['type_id']), depth)}" for n, ma in r.items)
            return f"{k.lower()} {r.name or ''} size {a['size']} {{{ms}}}"
        if k in ("ENUM", "ENUM64"):
            vs = ", ".join(f"{n}={ma['val']}" for n, ma in r.items)
            return f"enum {r.name or ''} size {a['size']} {a['encoding']} {{{vs}}}"
        if k == "TYPEDEF":
            return f"typedef {r.name} = {ref(int(a['type_id']), depth)}"
        if k == "FWD":
            return f"fwd {a['fwd_kind']} {r.name}"
        raise AssertionError(k)

    c = Canon()
    for r in recs.values():
        c.kinds[r.kind] += 1
        a = r.attrs
        if r.kind in NAMED and r.name:
            d = body(r)
            c.named[d] += 1
            c.by_name.setdefault((_kind_word(r.kind), r.name), []).append(d)
        elif r.kind == "FUNC":
            proto = ref(int(a["type_id"]))
            c.funcs[f"{r.name} {a['linkage'] if func_linkage else ''} {proto}"] += 1
            c.func_protos.setdefault(r.name, set()).add(proto)
        elif r.kind == "VAR":
            c.vars[f"{r.name} {a['linkage']} {ref(int(a['type_id']))}"] += 1
        elif r.kind == "DATASEC":
            entries = ", ".join(f"{recs[int(ea['type_id'])].kind} "
                                f"{recs[int(ea['type_id'])].name} {ea['offset']}+{ea['size']}"
                                for _, ea in r.items)
            c.datasecs[f"{r.name} {a['size']} [{entries}]"] += 1
        elif r.kind == "DECL_TAG":
            t = recs[int(a["type_id"])]
            target = (f"{t.kind} {t.name}" if t.kind in ("FUNC", "VAR") else
                      ref(t.id))
            c.decl_tags[f"{r.name} on {target} #{a['component_idx']}"] += 1
    return c


def compare(a: Canon, b: Canon) -> dict:
    """What differs: for each part, (only in a, only in b) as Counters."""
    out = {}
    for part in ("named", "funcs", "vars", "datasecs", "decl_tags"):
        x, y = getattr(a, part), getattr(b, part)
        out[part] = (x - y, y - x)
    return out


def c_blocks(path: str) -> collections.Counter:
    """`bpftool btf dump file PATH format c` as a multiset of top-level declarations
    (forward declarations left out: where they appear depends on the order)."""
    text = subprocess.run(["bpftool", "btf", "dump", "file", path, "format", "c"],
                          check=True, capture_output=True, text=True).stdout
    blocks = collections.Counter()
    for block in text.split("\n\n"):
        block = block.strip()
        if not block or block.startswith(("#ifndef", "#define", "#endif", "#pragma")):
            continue
        lines = [ln for ln in block.splitlines() if not ln.startswith(("#", "/*"))]
        rest = "\n".join(lines).strip()
        if rest and not (rest.count("\n") == 0 and rest.endswith(";") and
                         rest.split()[0] in ("struct", "union", "enum") and len(rest.split()) == 2):
            blocks[rest] += 1
    return blocks


def first(counter: collections.Counter, n: int = 5) -> list:
    return [k[:300] for k in list(counter)[:n]]


def by_name_diff(a: Canon, b: Canon) -> dict:
    """(kind, name) -> (a's definitions, b's definitions) wherever they differ."""
    out = {}
    for key in set(a.by_name) | set(b.by_name):
        x = sorted(a.by_name.get(key, []))
        y = sorted(b.by_name.get(key, []))
        if x != y:
            out[key] = (x, y)
    return out


def summary(diff: dict) -> str:
    return ", ".join(f"{part}: -{sum(x.values())} +{sum(y.values())}"
                     for part, (x, y) in diff.items())


def only(counter, prefix: Optional[str] = None) -> list:
    return sorted(k for k in counter if prefix is None or k.startswith(prefix))
