"""The one type model every reader (BTF, DWARF) produces and the DB writer consumes.

A `TypeGraph` is a flat list of `Type` records addressed by integer id (id 0 is `void`),
the same shape BTF uses.  References between types are ids, so a graph pickles cheaply
(the DWARF reader builds parts of it in worker processes) and cycles need no special care.

Kinds (plain strings, compared by identity in hot loops):
  void, int, float, ptr, array, struct, union, enum, fwd, typedef,
  const, volatile, restrict, type_tag, func_proto
Functions (BTF FUNC / DWARF subprogram) live in `TypeGraph.functions`, pointing at a
func_proto type.  What BTF has beyond types and functions is kept beside them, so a graph
read from BTF writes back out whole: `variables` (VAR: a kernel's per-CPU variables),
`datasecs` (DATASEC: the sections those live in) and `decl_tags` (DECL_TAG: annotations such
as `bpf_kfunc` on a function, a type, a member or a parameter).  The DWARF reader fills none
of the three.
"""
from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass, field
from typing import Iterator, Optional

from .errors import FormatError

VOID = "void"
INT = "int"
FLOAT = "float"
PTR = "ptr"
ARRAY = "array"
STRUCT = "struct"
UNION = "union"
ENUM = "enum"
FWD = "fwd"
TYPEDEF = "typedef"
CONST = "const"
VOLATILE = "volatile"
RESTRICT = "restrict"
TYPE_TAG = "type_tag"
FUNC_PROTO = "func_proto"

KINDS = (VOID, INT, FLOAT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF,
         CONST, VOLATILE, RESTRICT, TYPE_TAG, FUNC_PROTO)
COMPOSITE = (STRUCT, UNION)
_OWN_KIND = {k: k for k in KINDS}


def own_kind(kind: str) -> str:
    """This module's own string object for a kind equal to `kind` (else `kind`): a kind read
    from a DB or sent by a worker process is an equal string but another object, and the C
    loops (_cmodel.c) tell kinds by identity; given another object they leave the graph to
    the Python code (3x the time)."""
    return _OWN_KIND.get(kind, kind)
QUALIFIERS = (CONST, VOLATILE, RESTRICT, TYPE_TAG)
# kinds whose `ref` is simply "the same type with a qualifier / another name"
TRANSPARENT = (TYPEDEF, CONST, VOLATILE, RESTRICT, TYPE_TAG)


_ARCH_32 = ("i386", "i686", "x86", "arm", "armv7l", "mips", "ppc", "s390", "riscv32")


def pointer_size(arch: str) -> int:
    """Bytes of a pointer on a kernel of this arch (`uname -m` spelling; 8 when unknown)."""
    return 4 if arch in _ARCH_32 else 8


@dataclass(slots=True)
class Member:
    """A direct member of a struct/union.  `name` is None for an anonymous member."""
    name: Optional[str]
    type: int
    bit_offset: int          # from the start of the containing struct/union
    bit_size: int = 0        # 0: not a bitfield


@dataclass(slots=True)
class Param:
    name: Optional[str]
    type: int


@dataclass(slots=True)
class Type:
    kind: str
    name: Optional[str] = None
    size: Optional[int] = None        # bytes; None when the kind has no size (void, fwd, func_proto)
    ref: Optional[int] = None         # ptr/typedef/qualifier target, array element, func_proto return
    members: Optional[list] = None    # struct/union: list[Member]
    enumerators: Optional[list] = None  # enum: list[(name, value)]
    nelems: Optional[int] = None      # array: element count (0 for `x[]` / `x[0]`)
    params: Optional[list] = None     # func_proto: list[Param]
    variadic: bool = False            # func_proto
    signed: Optional[bool] = None     # int / enum
    encoding: Optional[str] = None    # int: 'signed', 'unsigned', 'char', 'bool'; fwd: 'struct'/'union'/'enum'
    origin: Optional[str] = None      # where it was read from (DWARF: CU name), for same-name layouts


@dataclass(slots=True)
class Function:
    name: str
    proto: int                 # id of a func_proto type
    static: bool = False
    file: Optional[str] = None
    line: Optional[int] = None
    module: str = "vm"         # 'vm' for vmlinux, else the module name (surftrace convention)


@dataclass(slots=True)
class Variable:
    """A variable BTF describes (VAR)."""
    name: str
    type: int
    linkage: str = "global"    # 'static', 'global' (allocated here) or 'extern'


@dataclass(slots=True)
class DataSec:
    """A data section BTF describes (DATASEC) and what lies in it."""
    name: str
    size: int
    entries: list = field(default_factory=list)   # [(kind 'var'|'func', index, offset, size)]


@dataclass(slots=True)
class DeclTag:
    """A `btf_decl_tag` annotation (DECL_TAG) on a type, a function or a variable, or on one
    member / parameter of it (`component`, -1 for the whole)."""
    value: str
    target_kind: str           # 'type', 'func' or 'var'
    target: int                # a type id, or an index into functions / variables
    component: int = -1


# what a DataSec entry or a DeclTag points at
TARGET_KINDS = ("type", "func", "var")
LINKAGES = ("static", "global", "extern")


# A chain of typedefs/qualifiers/arrays longer than this is a reference cycle (damaged or
# hostile input); real kernels stay below 20.
MAX_CHAIN = 1 << 16


class TypeCycle(FormatError):
    """A reference cycle no C type can have (the input is damaged or crafted)."""


@contextlib.contextmanager
def gc_paused():
    """Python's cycle collector off while a graph is built or written.  A graph's objects
    refer to each other by id, so they make no reference cycles for it to find, but with
    it on, every few thousand new objects it walks all of them again: a third of the time
    of reading a kernel's BTF and writing its DB.  On the way out the objects made
    meanwhile join the oldest generation (freeze + unfreeze), or the first collection after
    would walk them all at once."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


# What a reader made and no longer needs (a DWARF reader's sections, string caches and
# memos: 0.04 s to free for a vmlinux), freed by the DB writer while its SQLite thread
# works instead of on the way between the two (free_deferred); each read frees the last
# read's first, so at most one read's worth waits.
_FREE_LATER: list = []


def free_later(*objs) -> None:
    """Keep `objs` until the next free_deferred()."""
    _FREE_LATER.extend(objs)


def free_deferred() -> None:
    """Free what free_later() kept."""
    _FREE_LATER.clear()


@dataclass
class TypeGraph:
    types: list = field(default_factory=lambda: [Type(VOID, "void")])
    functions: list = field(default_factory=list)
    variables: list = field(default_factory=list)    # [Variable]
    datasecs: list = field(default_factory=list)     # [DataSec]
    decl_tags: list = field(default_factory=list)    # [DeclTag]
    source: str = ""           # 'btf' or 'dwarf'
    ptr_size: int = 8          # bytes of a pointer on the target (DWARF says; BTF: the arch)

    def add(self, t: Type) -> int:
        self.types.append(t)
        return len(self.types) - 1

    def __getitem__(self, tid: int) -> Type:
        return self.types[tid]

    def __len__(self) -> int:
        return len(self.types)

    def named(self, kinds=COMPOSITE) -> Iterator[tuple]:
        """(id, type) of every named type of the given kinds."""
        for tid, t in enumerate(self.types):
            if t.kind in kinds and t.name:
                yield tid, t

    # ---- type properties -------------------------------------------------
    def strip(self, tid: int) -> int:
        """Follow typedefs and qualifiers to the underlying type id."""
        types = self.types
        start = tid
        for _ in range(MAX_CHAIN):
            t = types[tid]
            if t.kind not in TRANSPARENT or t.ref is None:
                return tid
            tid = t.ref
        raise TypeCycle(f"type id {start}: typedef/qualifier chain loops")

    def sizeof(self, tid: int) -> Optional[int]:
        types = self.types
        t = types[tid]
        mult = 1
        for _ in range(MAX_CHAIN):
            if t.size is not None:
                return mult * t.size
            if t.kind in TRANSPARENT and t.ref is not None:
                t = types[t.ref]
            elif t.kind == ARRAY and t.ref is not None:
                mult *= t.nelems or 0
                t = types[t.ref]
            elif t.kind == PTR:
                return mult * self.ptr_size
            else:
                return None
        raise TypeCycle(f"type id {tid}: typedef/qualifier/array chain loops")

    def strip_cv_kind(self, tid: int) -> str:
        """Kind of a type once const/volatile/restrict/type_tag are peeled off."""
        types = self.types
        t = types[tid]
        for _ in range(MAX_CHAIN):
            if t.kind not in QUALIFIERS:
                return t.kind
            t = types[t.ref] if t.ref is not None else types[0]
        raise TypeCycle(f"type id {tid}: qualifier chain loops")

    # ---- C spelling ------------------------------------------------------
    def spelling_cache(self):
        """A memoized `type_name`: spell(tid) == type_name(tid), each id worked out once
        from its target's parts (see `_speller`), not re-walked for every type that
        points at it."""
        return _speller(self)

    def type_name(self, tid: int) -> str:
        """C spelling of a type with no declarator name: `struct file *`,
        `const char *`, `long unsigned int`, `void (*)(struct rcu_head *)`, `u8 [16]`."""
        return c_decl(self, tid, "")

    def base_name(self, tid: int) -> str:
        """The spelling of a type as a declaration head (no pointer/array/function parts)."""
        t = self.types[tid]
        k = t.kind
        if k in COMPOSITE or k == ENUM:
            return f"{k} {t.name}" if t.name else f"{k} {{...}}"
        if k == FWD:
            return f"{t.encoding or 'struct'} {t.name}"
        return t.name or k


def check_references(graph: "TypeGraph", source: str, first: int = 0) -> None:
    """Refuse a graph no C program could have: a reference to a missing type id, or a cycle
    that does not pass through a named type.  Real kernels have none; crafted BTF or DWARF
    would otherwise hang or overflow every walk (strip, sizeof, spelling, flattening).

    Two kinds of cycle are checked, each over the edges its walks follow:
      * by value: struct/union -> member type, typedef/qualifier -> target, array -> element
        (a struct containing itself, a typedef naming itself);
      * by spelling: pointer/array/qualifier -> target, function prototype -> return and
        parameter types (a pointer to itself); spelling stops at struct, union, enum and
        typedef names, so `struct list_head *next` is no cycle.
    `first`: only the types from this id on are checked (a split BTF's own, over a base
    checked already: base types never refer to them, so a cycle through them is theirs)."""
    types = graph.types
    n = len(types)
    # the types by the C loop (_cmodel.c check_types) where it is sure they are fine; else
    # (or where it is not built) here, which says what is wrong
    c = c_loops()
    in_c = first == 0 and c is not None and type(types) is list and c.check_types(types)
    if not in_c:
        by_value, by_spelling = _type_edges(types, first, source)
    for f in graph.functions:
        if not 0 <= f.proto < n:
            raise FormatError(f"{source}: function {f.name} refers to type id {f.proto}, "
                              f"which does not exist")
    counts = {"type": n, "func": len(graph.functions), "var": len(graph.variables)}
    for v in graph.variables:
        if not 0 <= v.type < n:
            raise FormatError(f"{source}: variable {v.name} refers to type id {v.type}, "
                              f"which does not exist")
    for d in graph.datasecs:
        for kind, index, _off, _size in d.entries:
            if kind not in ("var", "func") or not 0 <= index < counts[kind]:
                raise FormatError(f"{source}: data section {d.name} lists {kind} #{index}, "
                                  f"which does not exist")
    for tag in graph.decl_tags:
        if tag.target_kind not in counts or not 0 <= tag.target < counts[tag.target_kind]:
            raise FormatError(f"{source}: decl tag {tag.value!r} is on {tag.target_kind} "
                              f"#{tag.target}, which does not exist")
    if in_c:
        return
    for what, edges in (("contains itself", by_value),
                        ("is spelled through itself", by_spelling)):
        if first:                       # only the new types, renumbered from 0
            edges = [[j - first for j in out if j >= first] for out in edges[first:]]
        if _has_cycle(edges):
            cycle = [i + first for i in _find_cycle(edges)]
            ids = " -> ".join(str(i) for i in cycle)
            raise TypeCycle(f"{source}: type id {cycle[0]} {what} (reference cycle through "
                            f"type ids {ids})")


def _type_edges(types: list, first: int, source: str) -> tuple:
    """check_references' type part: every reference checked, and the two edge lists
    (by value, by spelling) of the types."""
    n = len(types)
    by_value: list = [()] * n
    by_spelling: list = [()] * n
    for tid in range(first, n):
        t = types[tid]
        k = t.kind
        ref = t.ref
        if k in COMPOSITE:
            if t.members:
                by_value[tid] = out = [m.type for m in t.members]
                _check_ids(out, n, tid, source)
            continue
        if ref is None:
            if k == FUNC_PROTO and t.params:
                by_spelling[tid] = out = [p.type for p in t.params]
                _check_ids(out, n, tid, source)
            continue
        if not 0 <= ref < n:
            _check_ids((ref,), n, tid, source)
        if k == PTR:
            by_spelling[tid] = (ref,)
        elif k == TYPEDEF:
            by_value[tid] = (ref,)
        elif k in QUALIFIERS or k == ARRAY:
            by_value[tid] = by_spelling[tid] = (ref,)
        elif k == FUNC_PROTO:
            by_spelling[tid] = out = [ref] + [p.type for p in t.params or ()]
            _check_ids(out, n, tid, source)
    return by_value, by_spelling


def _check_ids(ids, n: int, tid: int, source: str) -> None:
    for r in ids:
        if not isinstance(r, int) or not 0 <= r < n:
            raise FormatError(f"{source}: type id {tid} refers to type id {r}, which does "
                              f"not exist")


def _has_cycle(edges: list) -> bool:
    """Kahn's algorithm: peel nodes nothing points to; what cannot be peeled is on a cycle."""
    indeg = [0] * len(edges)
    for out in edges:
        for j in out:
            indeg[j] += 1
    todo = [i for i, d in enumerate(indeg) if d == 0]
    seen = 0
    while todo:
        i = todo.pop()
        seen += 1
        for j in edges[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                todo.append(j)
    return seen != len(edges)


def _find_cycle(edges: list) -> list:
    """One cycle, as a list of ids (first == last), by an iterative depth-first search."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = bytearray(len(edges))
    for root in range(len(edges)):
        if colour[root] != WHITE:
            continue
        colour[root] = GREY
        stack = [(root, iter(edges[root]))]
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = BLACK
                stack.pop()
            elif colour[nxt] == GREY:
                path = [s[0] for s in stack]
                return path[path.index(nxt):] + [nxt]
            elif colour[nxt] == WHITE:
                colour[nxt] = GREY
                stack.append((nxt, iter(edges[nxt])))
    return []


# Declarator nesting deeper than this is a reference cycle (`T *` whose target is itself).
MAX_DECL_DEPTH = 256


def c_decl(graph: TypeGraph, tid: int, declarator: str, depth: int = 0) -> str:
    """Render a C declaration of `declarator` with type `tid` (pahole/gdb spelling,
    qualifiers before the base type: `const char *`)."""
    if depth > MAX_DECL_DEPTH:
        raise TypeCycle(f"type id {tid}: declarator nests more than {MAX_DECL_DEPTH} deep "
                        f"(a reference cycle)")
    depth += 1
    types = graph.types
    t = types[tid]
    k = t.kind
    if k == PTR:
        target = types[t.ref] if t.ref is not None else None
        inner = "*" + declarator
        # pointer to array / function needs parentheses
        if target is not None and graph.strip_cv_kind(t.ref) in (ARRAY, FUNC_PROTO):
            inner = "(" + inner + ")"
        return c_decl(graph, t.ref if t.ref is not None else 0, inner, depth)
    if k == ARRAY:
        n = t.nelems if t.nelems else ""
        return c_decl(graph, t.ref, f"{declarator}[{n}]", depth)
    if k == FUNC_PROTO:
        ps = [c_decl(graph, p.type, "", depth) for p in (t.params or [])]
        if t.variadic:
            ps.append("...")
        if not ps:
            ps = ["void"]
        return c_decl(graph, t.ref if t.ref is not None else 0,
                      f"{declarator}({', '.join(ps)})", depth)
    if k in (CONST, VOLATILE, RESTRICT):
        target = types[t.ref] if t.ref is not None else types[0]
        if target.kind == PTR:          # `char * const p`
            return c_decl(graph, t.ref, f"{k} {declarator}".rstrip(), depth)
        head = c_decl(graph, t.ref if t.ref is not None else 0, declarator, depth)
        return f"{k} {head}"
    if k == TYPE_TAG:
        return c_decl(graph, t.ref, declarator, depth)
    head = graph.base_name(tid)
    return f"{head} {declarator}" if declarator else head


def _speller(graph: TypeGraph):
    """spell(tid) == c_decl(graph, tid, "") for every id, each worked out once.

    c_decl(tid, D) for a non-empty declarator D is always left + D + right, where left and
    right depend on the type only (pointer: the target's left + "*", array: "[n]" before the
    element's right, ...); so each id's (left, right) is built from its target's, and its
    spelling (the empty declarator) from those.  The cases and their order are c_decl's.
    `nest` is how deep c_decl's recursion goes from the id: what c_decl refuses as nested
    too deep (a cycle) is refused here too."""
    types = graph.types
    cache: dict = {}              # tid -> (spelling, left, right, nest)
    get = cache.get
    strip_cv_kind, base_name = graph.strip_cv_kind, graph.base_name

    # `parts` is handed to itself: a function naming itself through its closure is a
    # reference cycle, which would keep the graph alive until the cycle collector runs
    def parts(tid: int, depth: int, parts) -> tuple:
        if depth > MAX_DECL_DEPTH:
            _too_deep(tid)
        t = types[tid]
        k = t.kind
        if k == PTR:
            ref = t.ref if t.ref is not None else 0
            _s, left, right, n = get(ref) or parts(ref, depth + 1, parts)
            if t.ref is not None and strip_cv_kind(ref) in (ARRAY, FUNC_PROTO):
                left, right = left + "(*", ")" + right
            else:
                left += "*"
            e = (left + right, left, right, n + 1)
        elif k == ARRAY:
            _s, left, right, n = get(t.ref) or parts(t.ref, depth + 1, parts)
            right = f"[{t.nelems if t.nelems else ''}]" + right
            e = (left + right, left, right, n + 1)
        elif k == FUNC_PROTO:
            n = 0
            ps = []
            for p in t.params or ():
                pe = get(p.type) or parts(p.type, depth + 1, parts)
                ps.append(pe[0])
                if pe[3] > n:
                    n = pe[3]
            if t.variadic:
                ps.append("...")
            ref = t.ref if t.ref is not None else 0
            _s, left, right, rn = get(ref) or parts(ref, depth + 1, parts)
            right = f"({', '.join(ps) if ps else 'void'})" + right
            e = (left + right, left, right, (rn if rn > n else n) + 1)
        elif k in (CONST, VOLATILE, RESTRICT):
            target = types[t.ref] if t.ref is not None else types[0]
            if target.kind == PTR:          # `char * const p`
                _s, left, right, n = get(t.ref) or parts(t.ref, depth + 1, parts)
                e = (left + k + right, left + k + " ", right, n + 1)
            else:
                ref = t.ref if t.ref is not None else 0
                s, left, right, n = get(ref) or parts(ref, depth + 1, parts)
                e = (f"{k} {s}", f"{k} {left}", right, n + 1)
        elif k == TYPE_TAG:
            s, left, right, n = get(t.ref) or parts(t.ref, depth + 1, parts)
            e = (s, left, right, n + 1)
        else:
            head = base_name(tid)
            e = (head, head + " ", "", 1)
        cache[tid] = e
        return e

    def spell(tid: int) -> str:
        e = get(tid) or parts(tid, 0, parts)
        if e[3] > MAX_DECL_DEPTH + 1:
            _too_deep(tid)
        return e[0]
    return spell


def _too_deep(tid: int):
    raise TypeCycle(f"type id {tid}: declarator nests more than {MAX_DECL_DEPTH} deep "
                    f"(a reference cycle)")


def spell_all(graph: TypeGraph) -> list:
    """[graph.type_name(tid) for every id]: the DB writer's spellings, each worked out once.
    By the C loop (dbhive/_cmodel.c, the same cases as `_speller`) where it was built and
    not turned off (DBHIVE_MODEL_PURE=1); by `_speller` where the C loop refuses the graph
    (it then raises what `_speller` raises) or is not there."""
    c = c_loops()
    if c is not None:
        got = c.spell_all(graph.types)
        if got is not None:
            return got
    spell = _speller(graph)
    return [spell(tid) for tid in range(len(graph.types))]


def c_loops():
    """The DB writer's C loops over the model (dbhive/_cmodel.c: spell_all here, the
    surftrace members in surftrace.struct_rows), or None: not built, or turned off by
    DBHIVE_MODEL_PURE=1 (the Python code, the reference, gives the same result)."""
    return _c if os.environ.get("DBHIVE_MODEL_PURE", "") in ("", "0") else None


try:
    from . import _cmodel as _c
except ImportError:
    _c = None
else:
    _c.configure(Type, Param, Member, (PTR, ARRAY, FUNC_PROTO, CONST, VOLATILE, RESTRICT,
                                       TYPE_TAG, STRUCT, UNION, ENUM, FWD, VOID, INT, FLOAT,
                                       TYPEDEF))
