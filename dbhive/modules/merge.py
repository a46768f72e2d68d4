"""Several type graphs (the kernel's, each module's) -> one TypeGraph, deduplicated.

Every graph is turned into the DWARF reader's hash-consed keys (dbhive/dwarf/keys.py) and
interned into one `KeyTable`, so a type that the kernel and a hundred modules all carry
(`struct sk_buff`, `struct list_head`) is stored once; `keys.finalize` then builds the
merged graph, exactly as it does for the units of one file.

Pointers.  As in the DWARF reader, a pointer (and a prototype's parameter or return type)
reaching a named struct/union/typedef is keyed by a placeholder `(FWD, kind, name)`, which
breaks the cycles C allows and makes `struct file *` one type whatever graph it comes from;
finalize points a placeholder at the first complete layout of that name.  A module may have
its own, different layout of a name an earlier graph already defined (two drivers'
`struct priv`, a module's `struct pid_entry` beside the kernel's): then that module's
pointers get a placeholder scoped to the module and keep reaching the module's own layout.
Deciding that needs the module's keys compared with what the table holds; the comparison
is a dry run of the interning (no keys are added), repeated until the set of scoped names
is stable (a struct pointing to a scoped name differs from the kernel's too).

A declaration-only struct of one graph (a FWD) is the same key as the placeholder, so it
resolves to the complete layout another graph brings: a module's `struct net` reaches the
kernel's, a kernel pointer to `struct mpls_dev` reaches the mpls_router module's.

Walks are iterative (no recursion limit) and a by-value reference cycle — impossible in C,
so a damaged graph — is a `FormatError` naming the type ids.
"""
from __future__ import annotations

from typing import Iterable, Optional

from .. import model as M
from ..dwarf.keys import KeyTable, finalize, remap_key
from ..errors import FormatError

# rounds of "scope the names whose layout differs, recompute the keys" (each round scopes
# at least one more name; real modules need one or two)
MAX_SCOPE_ROUNDS = 64

_NAMED_TARGETS = (M.STRUCT, M.UNION, M.TYPEDEF)
MAX_NESTING = 256
# kind strings as the model's own objects (a graph from a worker process has unpickled copies)
_KIND = {k: k for k in M.KINDS}


def layout_signature(types: list, tid: int, spell) -> tuple:
    """A struct/union/typedef as pahole prints it: size and every member (members of
    in-place anonymous structs/unions flattened) with its C spelling, bit offset and
    width.  Two layouts with one signature are the same layout to a user."""
    t = types[tid]
    if t.kind == M.TYPEDEF:
        ref = t.ref or 0
        target = types[ref]
        if target.kind in M.COMPOSITE and not target.name:
            return (M.TYPEDEF, layout_signature(types, ref, spell))
        return (M.TYPEDEF, spell(ref))
    rows: list = []
    stack = [(tid, "", 0, 0)]
    while stack:
        cur, prefix, base, depth = stack.pop()
        if depth > MAX_NESTING:
            raise FormatError(f"type id {tid}: anonymous members nested more than "
                              f"{MAX_NESTING} deep (a reference cycle)")
        inner = []
        for m in types[cur].members or ():
            mt = types[m.type]
            rows.append((prefix + (m.name or ""), spell(m.type), base + m.bit_offset,
                         m.bit_size))
            if mt.kind in M.COMPOSITE and not mt.name:
                inner.append((m.type, f"{prefix}{m.name}." if m.name else prefix,
                              base + m.bit_offset, depth + 1))
        stack.extend(reversed(inner))
    return (t.kind, t.size, tuple(rows))


class _Keys:
    """One graph's types as keys in a fresh (graph-local) KeyTable.

    `scoped`: {(kind, name)} whose placeholders are scoped to `scope` (and to the target's
    type id, so each layout a graph points to keeps its own placeholder).
    After `convert`, `placeholders` maps each placeholder's local id to the graph type ids it
    stands for (its targets); `direct[tid]` is the local id of a converted type."""

    def __init__(self, g: M.TypeGraph, scope: str, scoped: frozenset):
        self.types = g.types
        self.scope = scope
        self.scoped = scoped
        self.table = KeyTable()
        n = len(g.types)
        self.direct: list = [None] * n       # local id of each type as reached by value
        self.viap: list = [None] * n         # ... as reached through a pointer
        self.direct[0] = self.viap[0] = 0
        self.placeholders: dict = {}         # local id -> {graph tid of the layout meant}
        self.named: dict = {}                # local id -> graph tid, complete named layouts

    def convert(self, roots: Iterable[int]) -> None:
        for tid in roots:
            if self.direct[tid] is None:
                self._walk(tid, False)
        # The layouts scoped placeholders stand for are taken too (they are this graph's).
        # A typedef has no declaration-only form: one reached only through a pointer or a
        # prototype is taken with its own target as reached through a pointer (a
        # `foo_t *` keeps `struct foo` as a placeholder).
        done: set = set()
        while True:
            todo, typedefs = [], []
            for lid, tids in self.placeholders.items():
                key = self.table.keys[lid]
                for tid in tids:
                    if self.direct[tid] is not None or tid in done:
                        continue
                    if len(key) == 4:
                        todo.append(tid)
                    elif key[1] == M.TYPEDEF:
                        typedefs.append(tid)
            if not todo and not typedefs:
                return
            for tid in todo:
                if self.direct[tid] is None:
                    self._walk(tid, False)
            for tid in typedefs:
                if tid not in done:
                    done.add(tid)
                    t = self.types[tid]
                    ref = t.ref or 0
                    if self.viap[ref] is None:
                        self._walk(ref, True)
                    self.table.intern((M.TYPEDEF, t.name, self.viap[ref]), t.origin)

    # ---- one type ---------------------------------------------------------------------
    def _deps(self, t: M.Type, vp: bool) -> tuple:
        """(type id, via pointer) pairs a type's key needs, or None for a placeholder."""
        k = _KIND.get(t.kind, t.kind)
        if k == M.PTR:
            return ((t.ref or 0, True),)
        if k in M.QUALIFIERS:
            return ((t.ref or 0, vp),)
        if k == M.ARRAY:
            return ((t.ref or 0, vp),)
        if k == M.TYPEDEF:
            return None if vp and t.name else ((t.ref or 0, False),)
        if k == M.STRUCT or k == M.UNION:
            if vp and t.name:
                return None
            return tuple((m.type, False) for m in (t.members or ()))
        if k == M.FUNC_PROTO:
            return ((t.ref or 0, True),) + tuple((p.type, True) for p in (t.params or ()))
        return ()

    def _key(self, tid: int, t: M.Type, vp: bool):
        """The key of a type whose dependencies are all converted; None means `void`."""
        k = _KIND.get(t.kind, t.kind)
        if k == M.INT:
            return (M.INT, t.name, t.size, t.signed, t.encoding)
        if k == M.FLOAT:
            return (M.FLOAT, t.name, t.size)
        if k == M.FWD:
            return (M.FWD, _KIND.get(t.encoding, M.STRUCT), t.name) if t.name else None
        if k == M.ENUM:
            if t.size is None:
                return (M.FWD, M.ENUM, t.name) if t.name else None
            key = [M.ENUM, t.name, t.size, t.signed]
            for name, value in (t.enumerators or ()):
                key += (name, value)
            return tuple(key)
        if k == M.VOID:
            return None
        deps = self._deps(t, vp)
        if deps is None:
            return self._placeholder(tid, t)
        ids = [(self.viap if dvp else self.direct)[d] for d, dvp in deps]
        if k == M.PTR:
            return (M.PTR, ids[0]) if t.size in (None, 8) else (M.PTR, ids[0], t.size)
        if k in M.QUALIFIERS:
            return (k, ids[0])
        if k == M.ARRAY:
            return (M.ARRAY, ids[0], t.nelems or 0)
        if k == M.TYPEDEF:
            return (M.TYPEDEF, t.name, ids[0])
        if k == M.STRUCT or k == M.UNION:
            if t.size is None:
                return (M.FWD, k, t.name) if t.name else None
            key = [k, t.name, t.size]
            for m, mid in zip(t.members or (), ids):
                key += (m.name, mid, m.bit_offset, m.bit_size)
            return tuple(key)
        if k == M.FUNC_PROTO:
            key = [M.FUNC_PROTO, ids[0], bool(t.variadic)]
            for p, pid in zip(t.params or (), ids[1:]):
                key += (p.name, pid)
            return tuple(key)
        raise FormatError(f"type id {tid}: unknown kind {k!r}")

    def _placeholder(self, tid: int, t: M.Type):
        k = _KIND[t.kind]
        if (k, t.name) in self.scoped:
            key = (M.FWD, k, t.name, f"{self.scope}#{tid}")
        else:
            key = (M.FWD, k, t.name)
        return key

    def _walk(self, root: int, root_vp: bool) -> None:
        """Convert `root` and everything it needs, depth first, without recursion."""
        types, table = self.types, self.table
        n = len(types)
        stack = [(root, root_vp, False)]
        open_: set = set()
        while stack:
            tid, vp, expanded = stack.pop()
            memo = self.viap if vp else self.direct
            if memo[tid] is not None:
                continue
            t = types[tid]
            if not expanded:
                if (tid, vp) in open_:
                    chain = sorted(x for x, _ in open_)
                    raise FormatError(f"type id {tid} contains itself by value (a reference "
                                      f"cycle through type ids {', '.join(map(str, chain))})")
                deps = self._deps(t, vp)
                missing = []
                for d, dvp in deps or ():
                    if not 0 <= d < n:
                        raise FormatError(f"type id {tid} refers to type id {d}, which "
                                          f"does not exist")
                    if (self.viap if dvp else self.direct)[d] is None:
                        missing.append((d, dvp, False))
                if missing:
                    open_.add((tid, vp))
                    stack.append((tid, vp, True))
                    stack.extend(missing)
                    continue
            key = self._key(tid, t, vp)
            if key is None:
                lid = 0
            else:
                lid = table.intern(key, t.origin)
                if t.name and t.kind in _NAMED_TARGETS:
                    if vp:                                          # a placeholder
                        self.placeholders.setdefault(lid, set()).add(tid)
                    elif key[0] != M.FWD:
                        self.named.setdefault(lid, tid)
            memo[tid] = lid
            open_.discard((tid, vp))


class TypeMerger:
    """Accumulates graphs; `graph()` returns the merged TypeGraph.

        m = TypeMerger()
        m.add(kernel_graph, "vm")
        m.add(read_dwarf("bridge.ko", module="bridge"), "bridge")
        g = m.graph()
    """

    def __init__(self):
        self.table = KeyTable()
        self.first_sig: dict = {}      # (kind, name) -> layout_signature of the first one
        self.targets: dict = {}        # scoped placeholder's global id -> its layout's
        self.functions: list = []      # (name, proto, static, file, line, rank, module)
        self.ptr_size: Optional[int] = None
        self.sources: list = []
        self.scoped_names = 0          # how many names got module-scoped placeholders

    def add(self, g: M.TypeGraph, module: str, roots: Optional[Iterable[int]] = None,
            functions: Optional[list] = None) -> None:
        """Merge graph `g` (its functions are tagged `module`).  `roots`: only these types
        and what they contain are taken (default: every type); `functions`: the functions
        to take (default: all of `g`'s), their prototypes are taken too."""
        if self.ptr_size is None:
            self.ptr_size = g.ptr_size
        elif g.ptr_size != self.ptr_size:
            raise FormatError(f"{module}: {g.ptr_size}-byte pointers, the other graphs have "
                              f"{self.ptr_size}-byte ones")
        if g.source and g.source not in self.sources:
            self.sources.append(g.source)
        funcs = g.functions if functions is None else functions
        root_ids = list(range(len(g.types))) if roots is None else list(roots)
        root_ids += [f.proto for f in funcs]
        spell = g.spelling_cache()
        scoped: frozenset = frozenset()
        for _round in range(MAX_SCOPE_ROUNDS):
            keys = _Keys(g, module, scoped)
            keys.convert(root_ids)
            new_first = self._new_first(keys)
            more = self._differing(keys, spell, new_first)
            if more <= scoped:
                break
            scoped = scoped | more
        self.scoped_names += len(scoped)
        m = self.table.merge(keys.table.keys, keys.table.origins)
        for name_key, tid in new_first.items():
            if name_key[0] in _NAMED_TARGETS:
                self.first_sig[name_key] = layout_signature(g, tid, spell)
        for lid, tids in keys.placeholders.items():
            key = keys.table.keys[lid]
            if len(key) == 4:                          # scoped: exactly one target
                (tid,) = tids
                self.targets[m[lid]] = m[keys.direct[tid]]
        direct = keys.direct
        self.functions.extend((f.name, m[direct[f.proto]], bool(f.static), f.file, f.line, 0,
                               module) for f in funcs)

    def _differing(self, keys: _Keys, spell, new_first: dict) -> set:
        """(kind, name) of the placeholders of `keys` whose target layout is not the one an
        unscoped placeholder reaches: the first of that name in the table, or (a name new
        to the table) this graph's first.  Layouts are compared as pahole prints them
        (`layout_signature`), so a declaration-only enum in one graph and its definition
        in another do not count as a difference."""
        g = keys.types
        out = set()
        for lid, tids in keys.placeholders.items():
            key = keys.table.keys[lid]
            kind, name = key[1], key[2]
            first = self.first_sig.get((kind, name))
            if first is None:
                ftid = new_first.get((kind, name))
                if ftid is None:
                    continue
                first = layout_signature(g, ftid, spell)
            for tid in tids:
                t = g[tid]
                if t.kind == M.FWD or (t.kind != M.TYPEDEF and t.size is None):
                    continue                  # a declaration: any layout of the name will do
                if layout_signature(g, tid, spell) != first:
                    out.add((kind, name))
                    break
        return out

    def _new_first(self, keys: _Keys) -> dict:
        """(kind, name) -> graph type id of the first layout of each named struct, union or
        typedef this graph brings that the table has none of yet (in interning order)."""
        out: dict = {}
        for lid, tid in sorted(keys.named.items()):
            t = keys.types[tid]
            name_key = (t.kind, t.name)
            if name_key not in self.first_sig and name_key not in out:
                out[name_key] = tid
        return out

    def graph(self) -> M.TypeGraph:
        g = finalize(self.table, self.functions, targets=self.targets)
        g.ptr_size = self.ptr_size or 8
        g.source = "+".join(self.sources) if self.sources else "dwarf"
        return g


def merge_graphs(graphs: Iterable[tuple]) -> M.TypeGraph:
    """[(graph, module name)] -> one graph."""
    m = TypeMerger()
    for g, module in graphs:
        m.add(g, module)
    return m.graph()
