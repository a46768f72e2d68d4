"""Several type graphs (the kernel's, each module's) -> one TypeGraph, deduplicated.

Every graph is turned into the DWARF reader's hash-consed keys (dbhive/dwarf/keys.py) and
interned into one `KeyTable`, so a type that the kernel and a hundred modules all carry
(`struct sk_buff`, `struct list_head`) is stored once; `keys.finalize` then builds the
merged graph, exactly as it does for the units of one file.

    m = TypeMerger()
    m.add(kernel_graph, "vm")
    m.add_keys(module_keys(read_dwarf("bridge.ko", module="bridge"), "bridge"))
    g = m.graph()

`module_keys` is the per-graph half (a worker process runs it: keys pickle much faster
than graphs); `add_keys` the table half.

Pointers.  As in the DWARF reader, a pointer (and a prototype's parameter or return type)
reaching a named struct/union/typedef is keyed by a placeholder `(FWD, kind, name)`, which
breaks the cycles C allows and makes `struct file *` one type whatever graph it comes from;
finalize points a placeholder at the first complete layout of that name.  A module may have
its own, different layout of a name an earlier graph already defined (two drivers'
`struct priv`, a module's `struct pid_entry` beside the kernel's): then that module's
pointers get a placeholder scoped to the module (and to the layout), and keep reaching the
module's own layout.  Whether layouts are the same is decided on the keys, as finalize will
see them: a declaration-only struct or enum equals any complete one of its name, a
placeholder any other placeholder of its name (`_Equivalence`).  When scoping is needed the
graph's keys are made again with those names scoped (`add` does it; `add_keys` says so and
the caller reads the graph again: it is rare).

A declaration-only struct of one graph (a FWD) is the same key as the placeholder, so it
resolves to the complete layout another graph brings: a kernel pointer to `struct mpls_dev`
reaches the mpls_router module's.

Modules read one after the other into one table (`SharedKeys`, a worker's) come as deltas:
the keys new to that table, and of the module's own types (what its DIEs became, and what
those contain) the layouts of the names it points to.  `add_delta` maps the table's ids to
the merged table's; a module whose pointers might need scoping (a layout of a name that is
not the first in the merged table and not the same once finalized, two layouts of one
name), or that reaches a key the merged table lacks, is refused, merged the usual way from
its own keys (read again), and `map_delta` maps its table's new keys where the merged table
has them: keys made with scoped placeholders it lacks stay absent, and a later module of
that table reaching one is refused too.  Either way the merged graph is the one merging each
module's own keys gives.

Walks are iterative (no recursion limit) and a by-value reference cycle — impossible in C,
so a damaged graph — is a `FormatError` naming the type ids.
"""
from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field
from typing import Iterable, Optional

from .. import model as M
from ..dwarf import keys as _keys
from ..dwarf.keys import KeyTable, closure, finalize, remap_key
from ..errors import FormatError

# rounds of "scope the names whose layout differs, recompute the keys" (each round scopes
# at least one more name; real modules need one)
MAX_SCOPE_ROUNDS = 64
MAX_NESTING = 256

_NAMED_TARGETS = (M.STRUCT, M.UNION, M.TYPEDEF)
_FIRST_KINDS = (M.STRUCT, M.UNION, M.ENUM, M.TYPEDEF)
_PTR, _ARRAY, _TYPEDEF, _STRUCT, _UNION, _PROTO = (M.PTR, M.ARRAY, M.TYPEDEF, M.STRUCT,
                                                   M.UNION, M.FUNC_PROTO)
_QUALS = frozenset(M.QUALIFIERS)


@dataclass
class ModuleKeys:
    """One graph as keys of its own table (what `module_keys` returns).

    placeholders  {local id of an unscoped placeholder: [local ids of the complete layouts
                  it stands for in this graph]} (declarations and layouts not taken left out)
    scoped        {local id of a scoped placeholder: local id of its layout}
    named         {local id: (kind, name)} of the complete named structs/unions/typedefs
    functions     [(name, proto local id, static, file, line, rank)] (rank 0: has code)"""
    module: str
    keys: list
    origins: list
    placeholders: dict = field(default_factory=dict)
    scoped: dict = field(default_factory=dict)
    named: dict = field(default_factory=dict)
    functions: list = field(default_factory=list)
    ptr_size: int = 8
    source: str = ""
    dry: Optional[list] = field(default=None, repr=False)   # set by TypeMerger.differing


class _Converter:
    """Keys of one graph's types, in a fresh (graph-local) KeyTable.  `scoped`: the
    (kind, name) whose placeholders are scoped to `scope` and to the layout pointed to."""

    def __init__(self, g: M.TypeGraph, scope: str, scoped: frozenset):
        self.types = g.types
        self.scope = scope
        self.scoped = scoped
        self.table = KeyTable()
        n = len(g.types)
        self.direct: list = [None] * n       # local id of each type as reached by value
        self.viap: list = [None] * n         # ... as reached through a pointer
        self.direct[0] = self.viap[0] = 0
        self.targets: dict = {}              # placeholder local id -> {graph tid meant}
        self.named: dict = {}                # local id -> graph tid of a complete named one

    def convert(self, roots: Iterable[int]) -> None:
        direct = self.direct
        for tid in roots:
            if direct[tid] is None:
                self._walk(tid, False)
        # The layouts scoped placeholders stand for are taken too (they are this graph's).
        # A typedef has no declaration-only form: one reached only through a pointer or a
        # prototype is taken with its own target as reached through a pointer (a `foo_t *`
        # keeps `struct foo` a placeholder).
        done: set = set()
        while True:
            todo, typedefs = [], []
            for lid, tids in self.targets.items():
                key = self.table.keys[lid]
                for tid in tids:
                    if direct[tid] is not None or tid in done:
                        continue
                    if len(key) == 4:
                        todo.append(tid)
                    elif key[1] is _TYPEDEF:
                        typedefs.append(tid)
            if not todo and not typedefs:
                return
            for tid in todo:
                if direct[tid] is None:
                    self._walk(tid, False)
            for tid in typedefs:
                if tid not in done:
                    done.add(tid)
                    t = self.types[tid]
                    ref = t.ref or 0
                    if self.viap[ref] is None:
                        self._walk(ref, True)
                    self.table.intern((_TYPEDEF, t.name, self.viap[ref]), t.origin)

    def _deps(self, k: str, t: M.Type, vp: bool):
        """(type id, via pointer) pairs a type's key needs, () for none, or None for a
        placeholder."""
        if k is _PTR:
            return ((t.ref or 0, True),)
        if k in _QUALS or k is _ARRAY:
            return ((t.ref or 0, vp),)
        if k is _TYPEDEF:
            return None if vp and t.name else ((t.ref or 0, False),)
        if k is _STRUCT or k is _UNION:
            if vp and t.name:
                return None
            return [(m.type, False) for m in (t.members or ())]
        if k is _PROTO:
            return [(t.ref or 0, True)] + [(p.type, True) for p in (t.params or ())]
        return ()

    def _key(self, tid: int, k: str, t: M.Type, deps):
        """The key of a type whose dependencies are all converted; None means `void`."""
        if deps is None:
            if (k, t.name) in self.scoped:
                return (M.FWD, k, t.name, f"{self.scope}#{tid}")
            return (M.FWD, k, t.name)
        if not deps:
            if k is M.INT:
                return (M.INT, t.name, t.size, t.signed, t.encoding)
            if k is M.FLOAT:
                return (M.FLOAT, t.name, t.size)
            if k is M.FWD:
                return (M.FWD, M.own_kind(t.encoding) if t.encoding in M.KINDS else _STRUCT,
                        t.name) if t.name else None
            if k is M.ENUM:
                if t.size is None:
                    return (M.FWD, M.ENUM, t.name) if t.name else None
                key = [M.ENUM, t.name, t.size, t.signed]
                for name, value in (t.enumerators or ()):
                    key += (name, value)
                return tuple(key)
            if k is M.VOID:
                return None
            if k is _STRUCT or k is _UNION:          # no members
                if t.size is None:
                    return (M.FWD, k, t.name) if t.name else None
                return (k, t.name, t.size)
            if k is _PROTO:
                return (_PROTO, 0, bool(t.variadic))
            raise FormatError(f"type id {tid}: unknown kind {k!r}")
        ids = [(self.viap if dvp else self.direct)[d] for d, dvp in deps]
        if k is _PTR:
            return (_PTR, ids[0]) if t.size in (None, 8) else (_PTR, ids[0], t.size)
        if k in _QUALS:
            return (k, ids[0])
        if k is _ARRAY:
            return (_ARRAY, ids[0], t.nelems or 0)
        if k is _TYPEDEF:
            return (_TYPEDEF, t.name, ids[0])
        if k is _STRUCT or k is _UNION:
            if t.size is None:
                return (M.FWD, k, t.name) if t.name else None
            key = [k, t.name, t.size]
            for m, mid in zip(t.members, ids):
                key += (m.name, mid, m.bit_offset, m.bit_size)
            return tuple(key)
        if k is _PROTO:
            key = [_PROTO, ids[0], bool(t.variadic)]
            for p, pid in zip(t.params, ids[1:]):
                key += (p.name, pid)
            return tuple(key)
        raise FormatError(f"type id {tid}: unknown kind {k!r}")

    def _walk(self, root: int, root_vp: bool) -> None:
        """Convert `root` and everything it needs, depth first, without recursion."""
        types, table = self.types, self.table
        direct, viap = self.direct, self.viap
        intern = table.intern
        n = len(types)
        stack = [(root, root_vp, None)]
        open_: set = set()
        while stack:
            tid, vp, deps = stack.pop()
            memo = viap if vp else direct
            if memo[tid] is not None:
                continue
            t = types[tid]
            k = M.own_kind(t.kind)     # a graph from a worker process: unpickled copies
            if deps is None:                       # first visit
                deps = self._deps(k, t, vp)
                if deps:
                    missing = []
                    for d, dvp in deps:
                        if (viap if dvp else direct)[d] is None:
                            if not 0 <= d < n:
                                raise FormatError(f"type id {tid} refers to type id {d}, "
                                                  f"which does not exist")
                            missing.append((d, dvp, None))
                    if missing:
                        if (tid, vp) in open_:
                            chain = sorted(x for x, _ in open_)
                            raise FormatError(
                                f"type id {tid} contains itself by value (a reference cycle "
                                f"through type ids {', '.join(map(str, chain))})")
                        open_.add((tid, vp))
                        stack.append((tid, vp, deps))
                        stack.extend(missing)
                        continue
            elif (tid, vp) in open_:
                open_.discard((tid, vp))
                for d, dvp in deps:
                    if (viap if dvp else direct)[d] is None:
                        raise FormatError(f"type id {tid} contains itself by value (a "
                                          f"reference cycle through type id {d})")
            key = self._key(tid, k, t, deps)
            if key is None:
                lid = 0
            else:
                lid = intern(key, t.origin)
                if deps is None:                                   # a placeholder
                    self.targets.setdefault(lid, set()).add(tid)
                elif t.name and k in _NAMED_TARGETS and key[0] is not M.FWD:
                    self.named.setdefault(lid, tid)
            memo[tid] = lid

    def result(self, g: M.TypeGraph, module: str, functions) -> ModuleKeys:
        types, direct = self.types, self.direct
        mk = ModuleKeys(module, self.table.keys, self.table.origins, ptr_size=g.ptr_size,
                        source=g.source)
        for lid, tids in self.targets.items():
            if len(self.table.keys[lid]) == 4:
                (tid,) = tids
                mk.scoped[lid] = direct[tid]
                continue
            meant = []
            for tid in tids:
                t = types[tid]
                if t.kind == M.FWD or (t.kind != M.TYPEDEF and t.size is None):
                    continue                 # a declaration: any layout of the name will do
                if direct[tid] is not None:
                    meant.append(direct[tid])
            if meant:
                mk.placeholders[lid] = meant
        mk.named = {lid: (types[tid].kind, types[tid].name) for lid, tid in self.named.items()}
        mk.functions = [(f.name, direct[f.proto], bool(f.static), f.file, f.line, 0)
                        for f in functions]
        return mk


def module_keys(g: M.TypeGraph, module: str, roots: Optional[Iterable[int]] = None,
                functions: Optional[list] = None, scoped: frozenset = frozenset()) -> ModuleKeys:
    """Graph `g` as keys (its functions tagged `module`).  `roots`: only these types and
    what they contain are taken (default: all); `functions`: the functions to take (default:
    all of `g`'s, their prototypes taken too); `scoped`: (kind, name) whose placeholders are
    scoped to this graph."""
    funcs = g.functions if functions is None else functions
    conv = _Converter(g, module, frozenset(scoped))
    conv.convert(list(range(len(g.types)) if roots is None else roots))
    conv.convert([f.proto for f in funcs])
    return conv.result(g, module, funcs)


def table_keys(table: KeyTable, functions: list, module: str, source: str = "dwarf",
               ptr_size: int = 8) -> ModuleKeys:
    """The DWARF reader's own keys of a file (`dbhive.dwarf.read_dwarf_keys`, placeholders
    unresolved) as ModuleKeys, without building the file's graph: a placeholder means the
    first complete layout of its name in the file, as finalize would make it."""
    keys = table.keys
    first: dict = {}
    named: dict = {}
    for lid in range(1, len(keys)):
        key = keys[lid]
        if key[0] in _NAMED_TARGETS and key[1] is not None:
            named[lid] = (key[0], key[1])
            first.setdefault((key[0], key[1]), lid)
    mk = ModuleKeys(module, keys, table.origins, named=named, ptr_size=ptr_size,
                    source=source)
    for lid in range(1, len(keys)):
        key = keys[lid]
        if key[0] == M.FWD and key[1] in _NAMED_TARGETS:
            target = first.get((key[1], key[2]))
            if target is not None:
                mk.placeholders[lid] = [target]
    mk.functions = list(functions)
    return mk


# ---------------------------------------------------------------------------------------
# modules read one after the other into one key table (a worker's), merged as deltas

@dataclass
class ModuleDelta:
    """One module read into a shared key table (`SharedKeys.read`): the keys that are new to
    the table, and what the merge needs to know of the module's own types.

    table         the shared table's identity (a reader process and its table's epoch)
    start         the id of the first new key in that table
    uses          {(kind, name): id of the module's one complete layout} of the names the
                  module points to by placeholder and has a layout of
    ambiguous     the module has two layouts of a name it points to (merged the usual way)
    own           the ids of the module's own types (what its DIEs became and what those
                  contain), as array('l') bytes
    functions     [(name, proto id, static, file, line, rank)]"""
    module: str
    table: tuple
    start: int
    keys: list
    origins: list
    uses: dict
    ambiguous: bool
    own: bytes
    functions: list
    ptr_size: int = 8
    source: str = "dwarf"


class SharedKeys:
    """The modules one process reads, interned into one KeyTable: a definition from a
    header another module already brought is jumped over by the scan (as between the
    units of one file), and only the keys new to the table are handed on."""

    _epochs = 0

    def __init__(self):
        self.table = KeyTable()
        self.known: dict = {}
        SharedKeys._epochs += 1
        self.id = (os.getpid(), SharedKeys._epochs)
        # per id: 1 an unscoped placeholder of a struct/union/typedef, 2 a complete named
        # one of those, else 0
        self.what: list = [0]

    def read(self, path: str, module: str, ptr_size: int) -> ModuleDelta:
        from ..dwarf import read_dwarf_keys
        t = self.table
        start = len(t.keys)
        used: set = set()
        try:
            _, functions = read_dwarf_keys(path, jobs=1, table=t, known=self.known, used=used)
        except BaseException:
            self.__init__()             # half a module went in: start a table afresh
            raise
        keys = t.keys
        what = self.what
        for key in keys[start:]:
            k = key[0]
            if k is M.FWD:
                what.append(1 if len(key) == 3 and key[1] in _NAMED_TARGETS else 0)
            else:
                what.append(2 if k in _NAMED_TARGETS and key[1] is not None else 0)
        # the module's own types: what its DIEs and prototypes became, what those contain,
        # and every key it added (all of them keys its own table would have)
        used.update(f[1] for f in functions)
        used.update(range(start, len(keys)))
        own = closure(keys, used)
        pointed, layouts = set(), {}
        for i in own:
            w = what[i]
            if w == 1:
                pointed.add((keys[i][1], keys[i][2]))
            elif w == 2:
                layouts.setdefault((keys[i][0], keys[i][1]), []).append(i)
        uses, ambiguous = {}, False
        for name in pointed:
            ls = layouts.get(name)
            if ls:
                if len(ls) > 1:
                    ambiguous = True
                    break
                uses[name] = ls[0]
        return ModuleDelta(module, self.id, start, keys[start:], t.origins[start:], uses,
                           ambiguous, array("l", own).tobytes(), list(functions),
                           ptr_size)


# an id of a shared table that has no counterpart in the merged one (yet): a key of a
# module merged the usual way, with scoped placeholders (see TypeMerger.map_delta)
_ABSENT = -(1 << 62)


class _DryKeys:
    """The merged table's keys, and (at ~id) a delta's new keys as remapped so far."""

    def __init__(self, keys: list, dry: list, start: int):
        self.keys, self.dry, self.start = keys, dry, start

    def __getitem__(self, x: int):
        return self.keys[x] if x >= 0 else self.dry[~x - self.start]


class _TableMap:
    """A shared table's ids -> the merged table's (or _ABSENT)."""

    def __init__(self):
        self.m: list = [0]
        self.absent: dict = {}         # id -> key, of the ids that are _ABSENT


class _Equivalence:
    """Whether two keys (each in its own key list) are the same type once finalize has run:
    placeholders and declarations equal any complete type of their kind and name.  (Keys
    may come from another process: kinds are compared by value, not identity.)"""

    def __init__(self, a: list, b: list):
        self.a, self.b = a, b
        self.memo: dict = {}

    def same(self, x: int, y: int, depth: int = 0) -> bool:
        r = self.memo.get((x, y))
        if r is not None:
            return r
        if depth > MAX_NESTING:
            raise FormatError(f"type keys nested more than {MAX_NESTING} deep (a cycle)")
        self.memo[(x, y)] = True           # assumed while the members are compared
        verdict, children = self._shallow(self.a[x], self.b[y])
        if verdict is None:
            verdict = all(self.same(i, j, depth + 1) for i, j in children)
        self.memo[(x, y)] = verdict
        return verdict

    @staticmethod
    def _shallow(ka, kb):
        """(True/False/None, [(child a, child b)]): None means "equal if the children are"."""
        if ka is kb or ka == kb and not _has_ids(ka):
            return True, ()
        fa, fb = ka[0] == M.FWD, kb[0] == M.FWD
        if fa or fb:
            if len(ka) == 4 or len(kb) == 4:         # scoped: one given layout
                return ka == kb, ()
            name_a = (ka[1], ka[2]) if fa else (ka[0], ka[1])
            name_b = (kb[1], kb[2]) if fb else (kb[0], kb[1])
            return name_a == name_b, ()
        k = ka[0]
        if k != kb[0] or len(ka) != len(kb):
            return False, ()
        if k == _PTR or k in _QUALS:
            return (None, [(ka[1], kb[1])]) if ka[2:] == kb[2:] else (False, ())
        if k == _TYPEDEF:
            return (None, [(ka[2], kb[2])]) if ka[1] == kb[1] else (False, ())
        if k == _ARRAY:
            return (None, [(ka[1], kb[1])]) if ka[2] == kb[2] else (False, ())
        if k == _STRUCT or k == _UNION:
            if ka[1:3] != kb[1:3]:
                return False, ()
            kids = []
            for p in range(3, len(ka), 4):
                if ka[p] != kb[p] or ka[p + 2] != kb[p + 2] or ka[p + 3] != kb[p + 3]:
                    return False, ()
                kids.append((ka[p + 1], kb[p + 1]))
            return None, kids
        if k == _PROTO:
            if ka[2] != kb[2]:
                return False, ()
            kids = [(ka[1], kb[1])]
            for p in range(3, len(ka), 2):
                kids.append((ka[p + 1], kb[p + 1]))
            return None, kids
        # what BTF does not say is not a difference: pahole's encoder never marks an int
        # as a char, and an enum's signedness is kept only by newer encoders
        if k == M.INT:
            return ka[:4] == kb[:4], ()
        if k == M.ENUM:
            return ka[1:3] == kb[1:3] and ka[4:] == kb[4:], ()
        return ka == kb, ()


def _has_ids(key) -> bool:
    return key[0] in (_PTR, _ARRAY, _TYPEDEF, _STRUCT, _UNION, _PROTO) or key[0] in _QUALS


def dry_ids(lkeys: list, ids: dict) -> list:
    """local id -> the id its key already has in the table `ids` (after remapping the ids
    it refers to the same way), or ~local id when the table lacks it."""
    if _keys._c is not None:
        return _keys._c.dry_ids(lkeys, ids)
    dry: list = [0] * len(lkeys)
    for lid in range(1, len(lkeys)):
        gid = ids.get(remap_key(lkeys[lid], dry))
        dry[lid] = gid if gid is not None else ~lid
    return dry


class TypeMerger:
    """Accumulates graphs; `graph()` returns the merged TypeGraph."""

    def __init__(self):
        self.table = KeyTable()
        self.first: dict = {}          # (kind, name) -> global id of the first complete one
        self.targets: dict = {}        # scoped placeholder's global id -> its layout's
        self.functions: list = []      # (name, proto, static, file, line, rank, module)
        self.ptr_size: Optional[int] = None
        self.sources: list = []
        self.scoped_names = 0          # how many names got module-scoped placeholders
        self.rereads = 0               # graphs whose keys needed scoping (merged again)
        self.tables: dict = {}         # SharedKeys.id -> _TableMap
        # deltas merged, and refused (merged the usual way) by why: two layouts of a name
        # the module points to, a key the merged table lacks, a layout not the first
        self.deltas = {"merged": 0, "ambiguous": 0, "absent": 0, "layout": 0}

    def add(self, g: M.TypeGraph, module: str, roots: Optional[Iterable[int]] = None,
            functions: Optional[list] = None) -> None:
        """Merge graph `g` (see `module_keys`), scoping what needs it."""
        roots = None if roots is None else list(roots)
        scoped: frozenset = frozenset()
        for _round in range(MAX_SCOPE_ROUNDS):
            mk = module_keys(g, module, roots, functions, scoped)
            more = self.differing(mk)
            if more <= scoped:
                break
            scoped = scoped | more
        self.scoped_names += len(scoped)
        self._merge(mk)

    def add_keys(self, mk: ModuleKeys) -> bool:
        """Merge a graph's keys made without scoping; False (nothing merged) when some of
        its names need scoping: then `add` the graph itself."""
        if self.differing(mk):
            return False
        self._merge(mk)
        return True

    def differing(self, mk: ModuleKeys) -> set:
        """(kind, name) of the placeholders of `mk` that would reach another layout than the
        one they mean: the first of that name in the table, or (a name new to the table)
        the graph's first."""
        ids = self.table.ids
        lkeys = mk.keys
        mk.dry = dry = dry_ids(lkeys, ids)    # local id -> global id if already there
        local_first: dict = {}
        for lid in sorted(mk.named):
            local_first.setdefault(mk.named[lid], lid)
        vs_table = vs_self = None
        out = set()
        for lid, meant in mk.placeholders.items():
            key = lkeys[lid]
            name = (key[1], key[2])
            if key[1] not in _NAMED_TARGETS:
                continue
            first = self.first.get(name)
            for target in meant:
                if first is not None:
                    if dry[target] == first:
                        continue
                    vs_table = vs_table or _Equivalence(lkeys, self.table.keys)
                    if vs_table.same(target, first):
                        continue
                else:
                    lf = local_first.get(name)
                    if lf is None or lf == target:
                        continue
                    vs_self = vs_self or _Equivalence(lkeys, lkeys)
                    if vs_self.same(target, lf):
                        continue
                out.add(name)
                break
        return out

    def add_delta(self, d: ModuleDelta) -> Optional[str]:
        """Merge a module read into a shared table (its deltas come in the order that
        table got them); None once merged.  Else nothing is merged, and why is returned:
        "layout" (its pointers need scoping: `add` its graph), "ambiguous" or "absent"
        (they may: `add_keys` its own keys, or else `add` its graph); then call
        `map_delta`."""
        tm = self.tables.setdefault(d.table, _TableMap())
        m, absent = tm.m, tm.absent
        if d.start != len(m):
            raise RuntimeError(f"{d.module}: keys {d.start}.. of table {d.table} come "
                               f"after {len(m)} of its keys were merged")
        if d.ambiguous:
            self.deltas["ambiguous"] += 1
            return "ambiguous"
        if absent and not absent.keys().isdisjoint(array("l", d.own)):
            self.deltas["absent"] += 1
            return "absent"
        ids, first = self.table.ids, self.first
        start = d.start
        # which of the new keys the table has already (the others: ~their id, for now)
        dry = []
        for i, key in enumerate(d.keys, start):
            key = remap_key(key, m)
            gid = ids.get(key)
            m.append(gid if gid is not None else ~i)
            dry.append(key)
        if not self._layouts_first(d, m, dry):
            del m[start:]
            self.deltas["layout"] += 1
            return "layout"
        self._check_ptr_size(d.module, d.ptr_size, d.source)
        intern = self.table.intern
        for i, key in enumerate(d.keys, start):
            if m[i] < 0:
                key = remap_key(key, m)
                gid = m[i] = intern(key, d.origins[i - start])
                if key[0] in _FIRST_KINDS and key[1] is not None:
                    first.setdefault((key[0], key[1]), gid)
        module = d.module
        self.functions.extend((name, m[proto], static, file, line, rank, module)
                              for (name, proto, static, file, line, rank) in d.functions)
        self.deltas["merged"] += 1
        return None

    def _layouts_first(self, d: ModuleDelta, m: list, dry: list) -> bool:
        """Whether each layout the module points to by placeholder is the first of its name
        in the merged table, as finalize will see it (else the module needs its own,
        scoped: `differing` finds the same name on the module's own keys, as the same
        equivalence decides it there).  `m`: the delta's ids mapped (~id: new), `dry`: its
        new keys remapped."""
        same = None
        first = self.first
        for name, lid in d.uses.items():
            f = first.get(name)
            if f is not None and m[lid] != f:
                same = same or _Equivalence(_DryKeys(self.table.keys, dry, d.start),
                                            self.table.keys)
                if not same.same(m[lid], f):
                    return False
        return True

    def map_delta(self, d: ModuleDelta) -> None:
        """After a module refused by `add_delta` was merged the usual way: its shared
        table's new keys -> the merged table's ids where it has them (with scoped
        placeholders it may not: those stay _ABSENT, and a later module of that table
        reaching one is merged the usual way too)."""
        tm = self.tables[d.table]
        m, ids, absent = tm.m, self.table.ids, tm.absent
        m.extend(_ABSENT for _ in d.keys)
        absent.update(enumerate(d.keys, d.start))
        for i in sorted(absent):                # ids only point down: in id order
            gid = ids.get(remap_key(absent[i], m))
            if gid is not None:
                m[i] = gid
                del absent[i]

    def stats(self) -> dict:
        """How the graphs were merged (for tests and benchmarks)."""
        return {"deltas": dict(self.deltas), "rereads": self.rereads,
                "scoped_names": self.scoped_names}

    def _check_ptr_size(self, module: str, ptr_size: int, source: str) -> None:
        if self.ptr_size is None:
            self.ptr_size = ptr_size
        elif ptr_size != self.ptr_size:
            raise FormatError(f"{module}: {ptr_size}-byte pointers, the other graphs "
                              f"have {self.ptr_size}-byte ones")
        if source and source not in self.sources:
            self.sources.append(source)

    def _merge(self, mk: ModuleKeys) -> None:
        self._check_ptr_size(mk.module, mk.ptr_size, mk.source)
        if mk.dry is None:
            self.differing(mk)
        dry = mk.dry
        intern, first = self.table.intern, self.first
        lkeys, origins = mk.keys, mk.origins
        m = [0] * len(lkeys)
        for lid in range(1, len(lkeys)):
            gid = dry[lid]
            if gid < 0:
                key = remap_key(lkeys[lid], m)
                gid = intern(key, origins[lid])
                if key[0] in _FIRST_KINDS and key[1] is not None:
                    first.setdefault((key[0], key[1]), gid)
            m[lid] = gid
        for lid, target in mk.scoped.items():
            self.targets[m[lid]] = m[target]
        module = mk.module
        self.functions.extend((name, m[proto], static, file, line, rank, module)
                              for (name, proto, static, file, line, rank) in mk.functions)

    @M.gc_paused()
    def graph(self) -> M.TypeGraph:
        g = finalize(self.table, self.functions, targets=self.targets)
        g.ptr_size = self.ptr_size or 8
        g.source = "+".join(self.sources) if self.sources else "dwarf"
        M.check_references(g, "the merged graphs")
        return g

