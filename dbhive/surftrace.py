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

from json.encoder import encode_basestring_ascii as _json_str
from typing import Callable

from . import model as M
from .errors import FormatError

MAX_NESTING = 256          # embedded structs inside embedded structs ... (real kernels: < 10)
MAX_CHAIN = 1 << 16        # qualifier/array links before a type is called a cycle


class TypeAccess:
    """The accessors a walk needs (see the module docstring), and what the walks learn
    about each member type, kept: the same few types are the types of most members."""

    def __init__(self, kind_of: Callable, members_of: Callable, sizeof: Callable,
                 spell: Callable):
        self.kind_of, self.members_of, self.sizeof, self.spell = (kind_of, members_of, sizeof,
                                                                  spell)
        self.peeled: dict = {}     # member type id -> (element id, element type, "[2][4]")
        self.leaves: dict = {}     # member type id -> (element spelled, bytes of the member)

    @classmethod
    def of_graph(cls, g: M.TypeGraph, spell=None) -> "TypeAccess":
        types = g.types
        return cls(types.__getitem__, lambda tid: types[tid].members or (), g.sizeof,
                   spell or g.spelling_cache())

    def peel(self, tid: int) -> tuple:
        """(element type id, its type, the dimensions as `[2][4]` or ""): qualifiers and
        array dimensions peeled off a member's type."""
        kind_of = self.kind_of
        dims = []
        mt = tid
        t = kind_of(mt)
        hops = 0
        while t.kind in M.QUALIFIERS or t.kind == M.ARRAY:
            if t.kind == M.ARRAY:
                dims.append(t.nelems or 0)
            mt = t.ref
            t = kind_of(mt)
            hops += 1
            if hops > MAX_CHAIN or mt is None:
                raise FormatError(f"type id {tid}: qualifier/array chain does not end "
                                  f"(a reference cycle)")
        p = self.peeled[tid] = (mt, t, "".join(f"[{d}]" for d in dims))
        return p

    def leaf(self, tid: int) -> tuple:
        """(spelling of the element type, bytes) of a member of type `tid` that is a leaf."""
        e = self.leaves[tid] = (self.spell((self.peeled.get(tid) or self.peel(tid))[0]),
                                self.sizeof(tid) or 0)
        return e


def flat_members(acc: TypeAccess, tid: int) -> list:
    """Leaf members of a struct/union, flattened surftrace-style: members of embedded
    (non-pointer, non-typedef) structs/unions as `outer.inner` with absolute offsets;
    members of anonymous structs/unions without a prefix.
    Returns [(name, type_string, byte_offset, bytes, bits)]."""
    out: list = []
    _flat(acc, tid, "", 0, (tid,), out)
    return out


def _flat(acc: TypeAccess, tid: int, prefix: str, base_bits: int, path: tuple, out: list):
    if len(path) > MAX_NESTING:
        raise FormatError(f"type id {path[0]}: structs nested more than {MAX_NESTING} deep")
    members_of, peeled, leaves = acc.members_of, acc.peeled, acc.leaves
    add = out.append
    for m in members_of(tid):
        bit_off = base_bits + m.bit_offset
        # the element type, qualifiers and array dimensions peeled off
        mt, t, dims = peeled.get(m.type) or acc.peel(m.type)
        if not dims and t.kind in M.COMPOSITE:
            inner = members_of(mt)
            if m.name is None or inner:
                if inner:
                    if mt in path:
                        raise FormatError(f"type id {mt} contains itself (a reference cycle "
                                          f"through type ids {', '.join(map(str, path))})")
                    inner_prefix = prefix if m.name is None else f"{prefix}{m.name}."
                    _flat(acc, mt, inner_prefix, bit_off, path + (mt,), out)
                    continue
        name = prefix + m.name + dims if m.name else prefix + dims
        if m.bit_size:
            unit = acc.sizeof(mt) or 4
            unit_bits = unit * 8
            start = (bit_off // unit_bits) * unit_bits
            # keep the whole bitfield inside one storage unit
            if bit_off + m.bit_size > start + unit_bits:
                start = bit_off - (bit_off % 8)
            add((name, acc.spell(mt), start // 8, unit, f"{bit_off - start}:{m.bit_size}"))
        else:
            spelled, nbytes = leaves.get(m.type) or acc.leaf(m.type)
            add((name, spelled, bit_off // 8, nbytes, ""))


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


def table_rows(g: M.TypeGraph, spell, null=None, spelled: list = None) -> tuple:
    """(files, funs, structs, members, types) row lists, tuples in column order; `null`
    stands for SQL NULL in the columns that are often NULL (funs.line, funs.module: see
    schema.insert_sql).  The three parts below, in this order."""
    files, funs = function_rows(g, spell, null, spelled)
    structs, members = struct_rows(g, spell, spelled)
    return files, funs, structs, members, type_rows(g, spell, spelled)


def function_rows(g: M.TypeGraph, spell, null=None, spelled: list = None) -> tuple:
    """(files, funs) rows.  `spelled`: as for struct_rows (then the C loop makes them)."""
    c = M.c_loops() if spelled is not None else None
    got = c.function_rows(g.types, g.functions, spelled, _json_str, null) if c else None
    if got is not None:
        return got
    types = g.types
    files: dict = {}
    funs = []
    sigs: dict = {}                     # (proto id, static) -> (args as JSON, ret)
    for f in g.functions:
        key = (f.proto, f.static)
        sig = sigs.get(key)
        if sig is None:
            proto = types[f.proto]
            args, ret = signature([spell(p.type) for p in (proto.params or [])],
                                  proto.variadic,
                                  spell(proto.ref if proto.ref is not None else 0), f.static)
            sig = sigs[key] = (_json_strings(args), ret)
        file = f.file or ""
        fid = files.get(file) or files.setdefault(file, len(files) + 1)
        funs.append((f.name, sig[0], sig[1], null if f.line is None else f.line, fid,
                     null if f.module is None else f.module))
    return [(i, name) for name, i in files.items()], funs


def struct_rows(g: M.TypeGraph, spell, spelled: list = None) -> tuple:
    """(structs, members) rows: every struct flattened (the bulk of the work).  `spelled`:
    every type's spelling (model.spell_all), when the caller has them: then the C loop
    (model.c_loops) flattens, where it is built and takes the graph."""
    types = g.types
    chosen = sorted(struct_ids(g).items())
    got = c_struct_rows(g, spelled, chosen) if spelled is not None else None
    if got is not None:
        return got
    acc = TypeAccess.of_graph(g, spell)
    structs, members = [], []
    for sid, (name, tid) in enumerate(chosen, start=1):
        rows = flat_members(acc, tid)
        structs.append((sid, name, len(rows), types[tid].size))
        # flat_members gives (name, type, ...); the table's columns are (fid, types, name, ...)
        members += [(sid, tstr, mname, off, nbytes, bits)
                    for (mname, tstr, off, nbytes, bits) in rows]
    return structs, members


def c_struct_rows(g: M.TypeGraph, spelled: list, chosen: list = None):
    """struct_rows made by the C loop (dbhive/_cmodel.c flat_rows), or None where it is not
    built or turned off, or refuses the graph (the Python walk then says why).  `chosen`:
    sorted(struct_ids(g).items()), when the caller has it."""
    c = M.c_loops()
    if c is None:
        return None
    chosen = sorted(struct_ids(g).items()) if chosen is None else chosen
    got = c.flat_rows(g.types, spelled, g.ptr_size, [tid for _, tid in chosen])
    if got is None:
        return None
    counts, members = got
    return [(sid, name, n, g.types[tid].size)
            for sid, ((name, tid), n) in enumerate(zip(chosen, counts), start=1)], members


def type_rows(g: M.TypeGraph, spell, spelled: list = None) -> list:
    """`types` rows: each spelling of a base, typedef or pointer type once.  `spelled`: as
    for struct_rows."""
    c = M.c_loops() if spelled is not None else None
    got = c.type_rows(g.types, spelled, g.ptr_size) if c else None
    if got is not None:
        return got
    types_rows: dict = {}
    sizeof = g.sizeof
    for tid, t in enumerate(g.types):
        if t.kind in TYPE_ROW_KINDS:
            name = spell(tid)
            if name not in types_rows:
                types_rows[name] = (spell(g.strip(tid)), sizeof(tid) or 0)
    types_rows.setdefault("void *", ("void *", g.ptr_size))
    return [(i, name, alias, size)
            for i, (name, (alias, size)) in enumerate(types_rows.items(), start=1)]


def _json_strings(strings: list) -> str:
    """json.dumps(strings), without building an encoder for each list."""
    return "[" + ", ".join(map(_json_str, strings)) + "]"
