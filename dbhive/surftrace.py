"""The surftrace face of a kernel DB: how the five tables the surftrace client reads
(shared/docs/surftrace-db-contract.md) are derived from the type model.

One implementation, used twice: by the writer (store.py) to fill the tables from a
TypeGraph, and by the resolver's lbc server to answer the client's remote `struct` command
from the resolver's own query layer — so local mode (the tables) and remote mode (the
server) give the same answers by construction.

The walks take accessors instead of a graph, so they run over a `TypeGraph` in memory and
over a resolver `TypeSource` (a DB) alike:
    kind_of(tid) -> object with .kind .name .size .ref .nelems
    members_of(tid) -> members with .name .type .bit_offset .bit_size
    sizeof(tid) -> int | None;  spell(tid) -> C spelling
"""
from __future__ import annotations

import json
from typing import Callable, Iterator

from . import model as M
from .errors import FormatError

MAX_NESTING = 256          # embedded structs inside embedded structs ... (real kernels: < 10)
MAX_CHAIN = 1 << 16        # qualifier/array links before a type is called a cycle


class TypeAccess:
    """The accessors a walk needs (see the module docstring)."""

    def __init__(self, kind_of: Callable, members_of: Callable, sizeof: Callable,
                 spell: Callable):
        self.kind_of, self.members_of, self.sizeof, self.spell = (kind_of, members_of, sizeof,
                                                                  spell)

    @classmethod
    def of_graph(cls, g: M.TypeGraph, spell=None) -> "TypeAccess":
        types = g.types
        return cls(types.__getitem__, lambda tid: types[tid].members or (), g.sizeof,
                   spell or g.spelling_cache())


def flat_members(acc: TypeAccess, tid: int) -> Iterator[tuple]:
    """Leaf members of a struct/union, flattened surftrace-style: members of embedded
    (non-pointer, non-typedef) structs/unions as `outer.inner` with absolute offsets;
    members of anonymous structs/unions without a prefix.
    Yields (name, type_string, byte_offset, bytes, bits)."""
    yield from _flat(acc, tid, "", 0, (tid,))


def _flat(acc: TypeAccess, tid: int, prefix: str, base_bits: int, path: tuple):
    kind_of, sizeof, spell = acc.kind_of, acc.sizeof, acc.spell
    if len(path) > MAX_NESTING:
        raise FormatError(f"type id {path[0]}: structs nested more than {MAX_NESTING} deep")
    for m in acc.members_of(tid):
        bit_off = base_bits + m.bit_offset
        mt = m.type
        # peel qualifiers and array dimensions to find the element type
        dims = []
        t = kind_of(mt)
        hops = 0
        while t.kind in M.QUALIFIERS or t.kind == M.ARRAY:
            if t.kind == M.ARRAY:
                dims.append(t.nelems or 0)
            mt = t.ref
            t = kind_of(mt)
            hops += 1
            if hops > MAX_CHAIN or mt is None:
                raise FormatError(f"type id {m.type}: qualifier/array chain does not end "
                                  f"(a reference cycle)")
        if not dims and t.kind in M.COMPOSITE:
            inner = acc.members_of(mt)
            if m.name is None or inner:
                if inner:
                    if mt in path:
                        raise FormatError(f"type id {mt} contains itself (a reference cycle "
                                          f"through type ids {', '.join(map(str, path))})")
                    inner_prefix = prefix if m.name is None else f"{prefix}{m.name}."
                    yield from _flat(acc, mt, inner_prefix, bit_off, path + (mt,))
                    continue
        name = (prefix + (m.name or "")) + "".join(f"[{d}]" for d in dims)
        if m.bit_size:
            unit = sizeof(mt) or 4
            unit_bits = unit * 8
            start = (bit_off // unit_bits) * unit_bits
            # keep the whole bitfield inside one storage unit
            if bit_off + m.bit_size > start + unit_bits:
                start = bit_off - (bit_off % 8)
            yield (name, spell(mt), start // 8, unit, f"{bit_off - start}:{m.bit_size}")
        else:
            yield (name, spell(mt), bit_off // 8, sizeof(m.type) or 0, "")


def struct_ids(g: M.TypeGraph) -> dict:
    """surftrace struct name (`struct X`, `union X`, or the typedef name of an anonymous
    struct) -> type id.  When a name has several layouts, the first in graph order wins."""
    chosen: dict = {}
    for tid, t in enumerate(g.types):
        k = t.kind
        if k in M.COMPOSITE and t.name and t.size is not None:
            chosen.setdefault(f"{k} {t.name}", tid)
        elif k == M.TYPEDEF and t.name:
            target = g.types[t.ref] if t.ref is not None else None
            if target is not None and target.kind in M.COMPOSITE and not target.name:
                chosen.setdefault(t.name, t.ref)
    return chosen


def signature(param_types: list, variadic: bool, ret: str, static: bool) -> tuple:
    """(args, ret) as the `funs` table spells a prototype: the parameter type strings (and
    "..."), `static ` before the return type of a static function."""
    return (list(param_types) + (["..."] if variadic else []),
            ("static " + ret) if static else ret)


TYPE_ROW_KINDS = (M.INT, M.FLOAT, M.TYPEDEF, M.ENUM, M.PTR, M.VOID)


def table_rows(g: M.TypeGraph, spell) -> tuple:
    """(files, funs, structs, members, types) row lists, tuples in column order."""
    files: dict = {}
    funs = []
    for f in g.functions:
        proto = g.types[f.proto]
        fid = files.setdefault(f.file or "", len(files) + 1)
        args, ret = signature([spell(p.type) for p in (proto.params or [])], proto.variadic,
                              spell(proto.ref if proto.ref is not None else 0), f.static)
        funs.append((f.name, json.dumps(args), ret, f.line, fid, f.module))
    acc = TypeAccess.of_graph(g, spell)
    structs, members = [], []
    for sid, (name, tid) in enumerate(sorted(struct_ids(g).items()), start=1):
        rows = list(flat_members(acc, tid))
        structs.append((sid, name, len(rows), g.types[tid].size))
        # flat_members yields (name, type, ...); the table's columns are (fid, types, name, ...)
        members.extend((sid, tstr, mname, off, nbytes, bits)
                       for (mname, tstr, off, nbytes, bits) in rows)
    types_rows: dict = {}
    for tid, t in enumerate(g.types):
        if t.kind in TYPE_ROW_KINDS:
            name = spell(tid)
            if name not in types_rows:
                types_rows[name] = (spell(g.strip(tid)), g.sizeof(tid) or 0)
    types_rows.setdefault("void *", ("void *", g.ptr_size))
    trow = [(i, name, alias, size)
            for i, (name, (alias, size)) in enumerate(types_rows.items(), start=1)]
    frow = [(i, name) for name, i in files.items()]
    return frow, funs, structs, members, trow
