"""The resolver's query layer: read-only access to one kernel's types, from a DB file
(`KernelDB`: the `kt_*` tables and `meta`) or from a type graph in memory (`GraphSource`:
the kernel's BTF read directly), with small caches.

Every question the resolver, the expression translator and the lbc server answer goes
through a `TypeSource`, so all of them agree.  Subclasses provide primitive lookups; the
walks (typedef chains, anonymous members, forward declarations) are written once in the
base class, bounded and cycle-safe (a damaged DB gives `CorruptDB`, never a hang).

Only the stdlib `sqlite3` is used: opening a DB and answering the first query must stay
within a few milliseconds.  Statements come from dbhive.schema (constant text with `?`
parameters).  One connection per DB, shared by threads under a lock; the caches are plain
dicts filled with immutable tuples, so readers never see partial entries.
"""
from __future__ import annotations

import os
import re
import sqlite3
import threading
from typing import NamedTuple, Optional

from dbhive import model as M
from dbhive import schema as S
from dbhive.surftrace import TYPE_ROW_KINDS

from .errors import CorruptDB, NoKernelDB

STRUCT, UNION, TYPEDEF, PTR, ARRAY, FWD, ENUM, FUNC_PROTO = (
    M.STRUCT, M.UNION, M.TYPEDEF, M.PTR, M.ARRAY, M.FWD, M.ENUM, M.FUNC_PROTO)
COMPOSITE = M.COMPOSITE
QUALIFIERS = M.QUALIFIERS
TRANSPARENT = M.TRANSPARENT

_TYPE_COLS = ("id", "kind", "name", "size", "ref", "nelems", "signed", "encoding", "spelling")
_FUNC_COLS = ("name", "proto", "static", "file", "line", "module")
_SQL_TYPE = S.select_sql(S.KT_TYPES, _TYPE_COLS, "id = ?")
_SQL_MEMBERS = S.select_sql(S.KT_MEMBERS, ("name", "member_type", "bit_offset", "bit_size"),
                            "type_id = ?", "idx")
_SQL_BY_NAME = S.select_sql(S.KT_TYPES, ("id", "kind", "size", "ref"), "name = ? AND kind = ?",
                            "id")
_SQL_LAYOUTS = ("SELECT t.id, t.size, group_concat(m.name || ':' || m.bit_offset || ':' || "
                "m.bit_size, ',') FROM kt_types t LEFT JOIN kt_members m ON m.type_id = t.id "
                "WHERE t.name = ? AND t.kind = ? AND t.size IS NOT NULL "
                "GROUP BY t.id ORDER BY t.id")
_SQL_FUNCS = S.select_sql(S.KT_FUNCTIONS, _FUNC_COLS, "name = ?", "id")
_SQL_PARAMS = S.select_sql(S.KT_PARAMS, ("name", "param_type"), "proto_id = ?", "idx")
_SQL_VARIADIC = S.select_sql(S.KT_TYPES, ("variadic",), "id = ?")
_SQL_ALL_COMPOSITES = S.select_sql(
    S.KT_TYPES, ("id", "kind", "name", "size"),
    "kind IN ('struct', 'union') AND name IS NOT NULL AND size IS NOT NULL", "name, kind, id")
_SQL_ALL_TYPES = S.select_sql(S.KT_TYPES, _TYPE_COLS)
_SQL_ALL_MEMBERS = S.select_sql(S.KT_MEMBERS, ("type_id", "name", "member_type", "bit_offset",
                                               "bit_size"), order="type_id, idx")
# the surftrace view: typedef names of anonymous structs/unions; types by spelling
_SQL_ANON_TYPEDEFS = ("SELECT t.id, t.name, t.ref FROM kt_types t JOIN kt_types r "
                      "ON r.id = t.ref WHERE t.kind = 'typedef' AND r.kind IN "
                      "('struct', 'union') AND r.name IS NULL ORDER BY t.id")
_SQL_BY_SPELLING = S.select_sql(
    S.KT_TYPES, ("id",), f"spelling = ? AND kind IN ({', '.join('?' * len(TYPE_ROW_KINDS))})",
    "id LIMIT 1")
_SQL_FUNCS_LIKE = S.select_sql(S.KT_FUNCTIONS, _FUNC_COLS, "name LIKE ?", "id")

MAX_CHAIN = 1 << 16          # links before a chain is called a cycle (damaged DB)


class TypeRow(NamedTuple):
    id: int
    kind: str
    name: Optional[str]
    size: Optional[int]
    ref: Optional[int]
    nelems: Optional[int]
    signed: Optional[int]
    encoding: Optional[str]
    spelling: str


class MemberRow(NamedTuple):
    name: Optional[str]
    type: int
    bit_offset: int
    bit_size: int


class FoundMember(NamedTuple):
    bit_offset: int          # from the start of the containing struct (through anonymous ones)
    type: int
    bit_size: int


def like_regex(pattern: str, escape_underscore: bool = False):
    """SQLite's LIKE as a regex: `%` any run, `_` any one character (or literal), ASCII case
    folded."""
    out = []
    for ch in pattern:
        if ch == "%":
            out.append(".*")
        elif ch == "_" and not escape_underscore:
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.IGNORECASE | re.DOTALL)


class TypeSource:
    """The query layer's view of one kernel's types: a DB file (`KernelDB`) or a type graph
    held in memory (`GraphSource`, e.g. read straight from the kernel's BTF).

    Subclasses provide the primitive lookups (`type`, `members`, `named`, `functions`,
    `params`, `variadic`, `layout_signatures`, `all_composites`); the walks that answer
    questions (`strip`, `sizeof`, `find_composite`, `find_member`, ...) are written once here,
    so every source answers alike."""

    path: str = ""
    meta: dict
    has_kt: bool = True
    ptr_size: int = 8
    label: str = "db"             # provenance prefix: 'db:<path>' or 'btf:<path>'

    def _init_caches(self) -> None:
        self.ptr_size = M.pointer_size(self.meta.get("arch") or "")
        self._found: dict = {}
        self._layouts: dict = {}
        self._surftrace_names: Optional[list] = None

    @property
    def source(self) -> str:
        return f"{self.label}:{self.path}"

    def close(self) -> None:
        pass

    # ---- derived walks -----------------------------------------------------
    def strip(self, tid: int) -> int:
        """Follow typedefs and qualifiers."""
        return self._follow(tid, TRANSPARENT)

    def strip_cv(self, tid: int) -> int:
        """Follow qualifiers (const, volatile, restrict, type tags)."""
        return self._follow(tid, QUALIFIERS)

    def _follow(self, tid: int, kinds: tuple) -> int:
        # a chain longer than any real kernel's is a cycle: the DB is damaged
        t = self.type(tid)
        for _ in range(MAX_CHAIN):
            if t.kind not in kinds or t.ref is None:
                return t.id
            t = self.type(t.ref)
        raise _cycle(self, tid)

    def sizeof(self, tid: int) -> Optional[int]:
        t = self.type(tid)
        mult = 1
        for _ in range(MAX_CHAIN):
            if t.size is not None:
                return mult * t.size
            if t.kind in TRANSPARENT and t.ref is not None:
                t = self.type(t.ref)
            elif t.kind == ARRAY and t.ref is not None:
                mult *= t.nelems or 0
                t = self.type(t.ref)
            elif t.kind == PTR:
                return mult * self.ptr_size
            else:
                return None
        raise _cycle(self, tid)

    def spelling(self, tid: int) -> str:
        return self.type(tid).spelling

    def find_composite(self, name: str, kind: Optional[str] = None, _depth: int = 0) -> Optional[int]:
        """The type id of struct/union `name` (the first complete layout in id order), or of
        the struct/union a typedef `name` stands for.  None when absent."""
        kinds = (kind,) if kind else (STRUCT, UNION)
        for k in kinds:
            for (tid, _k, size, _ref) in self.named(name, k):
                if size is not None:
                    return tid
        if kind is None and _depth < 2:
            for (tid, _k, _size, _ref) in self.named(name, TYPEDEF):
                sid = self.strip(tid)
                st = self.type(sid)
                if st.kind in COMPOSITE:
                    if st.size is None and st.name:       # typedef of a forward declaration
                        return self.find_composite(st.name, st.kind, _depth + 1)
                    return sid
                if st.kind == FWD and st.name:
                    return self.find_composite(st.name, st.encoding or STRUCT, _depth + 1)
        return None

    def layouts(self, name: str, kind: str) -> int:
        """How many different layouts struct/union `name` has in this source."""
        key = (name, kind)
        n = self._layouts.get(key)
        if n is None:
            rows = self.named(name, kind)
            if sum(1 for r in rows if r[2] is not None) <= 1:
                n = 1
            else:
                n = len({(size, sig) for (_id, size, sig) in self.layout_signatures(name, kind)})
            self._layouts[key] = n
        return n

    def complete(self, tid: int) -> int:
        """A forward declaration (or a size-less struct) replaced by its full definition."""
        t = self.type(tid)
        if t.kind == FWD or (t.kind in COMPOSITE and t.size is None):
            if t.name:
                kind = t.kind if t.kind in COMPOSITE else (t.encoding or STRUCT)
                full = self.find_composite(t.name, kind)
                if full is not None:
                    return full
        return tid

    def find_member(self, tid: int, name: str) -> Optional[FoundMember]:
        """Member `name` of composite `tid`, looking through anonymous structs/unions as C
        does."""
        key = (tid, name)
        if key in self._found:
            return self._found[key]
        found = self._found[key] = self._search_member(tid, name)
        return found

    def _search_member(self, tid: int, name: str) -> Optional[FoundMember]:
        # Depth-first, iteratively: a level's own members are checked before its anonymous
        # members are entered, in declaration order; each type is entered once, so a
        # damaged DB whose struct contains itself cannot loop.
        stack = [(tid, 0)]
        entered = {tid}
        while stack:
            cur, base = stack.pop()
            ms = self.members(cur)
            for m in ms:
                if m.name == name:
                    return FoundMember(base + m.bit_offset, m.type, m.bit_size)
            anonymous = []
            for m in ms:
                if not m.name:
                    inner = self.strip(m.type)
                    if inner not in entered and self.type(inner).kind in COMPOSITE:
                        entered.add(inner)
                        anonymous.append((inner, base + m.bit_offset))
            stack.extend(reversed(anonymous))
        return None

    # ---- the surftrace view (what the client's tables hold; the lbc server) ----------
    def surftrace_struct(self, name: str) -> Optional[int]:
        """The type id the surftrace `structs` table lists under `name` (`struct X`,
        `union X`, or the typedef name of an anonymous struct/union), or None."""
        kind, _, base = name.partition(" ")
        if base and kind in COMPOSITE:
            for (tid, _k, size, _ref) in self.named(base.strip(), kind):
                if size is not None:
                    return tid
            return None
        for tid, tname, ref in self.anonymous_typedefs():
            if tname == name:
                return ref
        return None

    def surftrace_structs_like(self, pattern: str, limit: int) -> list:
        """[(name, type id)] of the surftrace struct names matching a LIKE pattern (`_`
        literal), in name order, at most `limit`."""
        if self._surftrace_names is None:
            names: dict = {}
            for (tid, kind, name, _size) in self.all_composites_by_id():
                names.setdefault(f"{kind} {name}", tid)
            for tid, tname, ref in self.anonymous_typedefs():
                names.setdefault(tname, ref)
            self._surftrace_names = sorted(names.items())
        rx = like_regex(pattern, escape_underscore=True)
        out = []
        for name, tid in self._surftrace_names:
            if rx.fullmatch(name):
                out.append((name, tid))
                if len(out) >= limit:
                    break
        return out

    def type_by_spelling(self, spelling: str) -> Optional[int]:
        """The first base type / typedef / enum / pointer spelled `spelling` (the surftrace
        `types` table's row), or None."""
        raise NotImplementedError

    # ---- primitives (subclasses) -------------------------------------------
    def type(self, tid: int) -> TypeRow:
        raise NotImplementedError

    def members(self, tid: int) -> tuple:
        raise NotImplementedError

    def named(self, name: str, kind: str) -> tuple:
        """(id, kind, size, ref) of every type with this name and kind, in id order."""
        raise NotImplementedError

    def layout_signatures(self, name: str, kind: str) -> list:
        """[(id, size, signature)] of the complete layouts of a struct/union name."""
        raise NotImplementedError

    def functions(self, name: str) -> list:
        """[(name, proto, static, file, line, module)] in id order."""
        raise NotImplementedError

    def params(self, proto: int) -> list:
        """[(name, type)] of a func_proto."""
        raise NotImplementedError

    def variadic(self, proto: int) -> bool:
        raise NotImplementedError

    def all_composites(self) -> list:
        """[(id, kind, name, size)] of every named complete struct/union, by (name, kind, id)."""
        raise NotImplementedError

    def all_composites_by_id(self) -> list:
        """[(id, kind, name, size)] of every named complete struct/union, in id order."""
        return sorted(self.all_composites())

    def anonymous_typedefs(self) -> list:
        """[(typedef id, typedef name, struct id)] of typedefs naming an anonymous
        struct/union, in id order."""
        raise NotImplementedError

    def functions_like(self, pattern: str) -> list:
        """Function rows (as `functions`) whose name matches a LIKE pattern, in id order."""
        raise NotImplementedError

    def preload(self) -> None:
        pass


def _cycle(src: TypeSource, tid: int):
    return CorruptDB(f"{src.path}: type id {tid} is part of a reference cycle (damaged input)")


class KernelDB(TypeSource):
    """One DB file, opened read-only (its schema version checked)."""

    label = "db"

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise NoKernelDB(f"no such DB file: {path}")
        self.path = os.path.abspath(path)
        self._conn, self.meta = S.open_db(path, threads=True)
        self.has_kt = True
        self._lock = threading.Lock()
        self._init_caches()
        self._types: dict = {}
        self._members: dict = {}
        self._by_name: dict = {}
        self._funcs: dict = {}
        self._params: dict = {}
        self._anon: Optional[list] = None

    def close(self) -> None:
        self._conn.close()

    def _query(self, sql: str, args: tuple = ()) -> list:
        with self._lock:
            return S.fetch_all(self._conn, self.path, sql, args)

    def type(self, tid: int) -> TypeRow:
        t = self._types.get(tid)
        if t is None:
            rows = self._query(_SQL_TYPE, (tid,))
            if not rows:
                raise CorruptDB(f"{self.path}: type id {tid} is referenced but not in the DB")
            t = self._types[tid] = TypeRow(*rows[0])
        return t

    def members(self, tid: int) -> tuple:
        ms = self._members.get(tid)
        if ms is None:
            ms = self._members[tid] = tuple(MemberRow(*r) for r in self._query(_SQL_MEMBERS, (tid,)))
        return ms

    def named(self, name: str, kind: str) -> tuple:
        key = (name, kind)
        r = self._by_name.get(key)
        if r is None:
            r = self._by_name[key] = tuple(self._query(_SQL_BY_NAME, key))
        return r

    def layout_signatures(self, name: str, kind: str) -> list:
        return self._query(_SQL_LAYOUTS, (name, kind))

    def functions(self, name: str) -> list:
        r = self._funcs.get(name)
        if r is None:
            r = self._query(_SQL_FUNCS, (name,))
            if len(self._funcs) < 65536:
                self._funcs[name] = r
        return r

    def params(self, proto: int) -> list:
        r = self._params.get(proto)
        if r is None:
            r = self._params[proto] = self._query(_SQL_PARAMS, (proto,))
        return r

    def variadic(self, proto: int) -> bool:
        rows = self._query(_SQL_VARIADIC, (proto,))
        return bool(rows and rows[0][0])

    def all_composites(self) -> list:
        return self._query(_SQL_ALL_COMPOSITES)

    def anonymous_typedefs(self) -> list:
        if self._anon is None:
            self._anon = self._query(_SQL_ANON_TYPEDEFS)
        return self._anon

    def type_by_spelling(self, spelling: str) -> Optional[int]:
        rows = self._query(_SQL_BY_SPELLING, (spelling,) + TYPE_ROW_KINDS)
        return rows[0][0] if rows else None

    def functions_like(self, pattern: str) -> list:
        return self._query(_SQL_FUNCS_LIKE, (pattern,))

    def preload(self) -> None:
        """Load every type and member row at once (for whole-DB walks such as `dump`)."""
        with self._lock:
            try:
                types = {r[0]: TypeRow(*r) for r in self._conn.execute(_SQL_ALL_TYPES)}
                members: dict = {}
                for (tid, name, mt, bo, bs) in self._conn.execute(_SQL_ALL_MEMBERS):
                    members.setdefault(tid, []).append(MemberRow(name, mt, bo, bs))
            except sqlite3.DatabaseError as e:     # damage the rows read so far did not show
                raise S.damaged_db(self.path, e) from None
        self._types.update(types)
        for tid, t in types.items():
            if t.kind in COMPOSITE:
                self._members[tid] = tuple(members.get(tid, ()))


class GraphSource(TypeSource):
    """A `dbhive.model.TypeGraph` held in memory (e.g. the running kernel's BTF read
    directly): answers exactly as the DB built from the same graph would."""

    label = "btf"

    def __init__(self, graph, path: str, meta: dict, label: str = "btf"):
        self.graph = graph
        self.path = path
        self.meta = dict(meta)
        self.label = label
        self._init_caches()
        self._rows: dict = {}
        self._member_rows: dict = {}
        by_name: dict = {}
        for tid, t in enumerate(graph.types):
            if t.name:
                by_name.setdefault((t.name, t.kind), []).append((tid, t.kind, t.size, t.ref))
        self._by_name = {k: tuple(v) for k, v in by_name.items()}
        funcs: dict = {}
        for f in graph.functions:
            funcs.setdefault(f.name, []).append((f.name, f.proto, int(f.static), f.file, f.line,
                                                 f.module))
        self._funcs = funcs
        self._spell = graph.spelling_cache()
        self._anon: Optional[list] = None
        self._spellings: Optional[dict] = None

    def type(self, tid: int) -> TypeRow:
        r = self._rows.get(tid)
        if r is None:
            if not isinstance(tid, int) or not 0 <= tid < len(self.graph.types):
                raise CorruptDB(f"{self.path}: type id {tid} is referenced but not defined")
            t = self.graph.types[tid]
            r = self._rows[tid] = TypeRow(tid, t.kind, t.name, t.size, t.ref, t.nelems,
                                          None if t.signed is None else int(t.signed),
                                          t.encoding, self._spell(tid))
        return r

    def members(self, tid: int) -> tuple:
        ms = self._member_rows.get(tid)
        if ms is None:
            t = self.graph.types[tid]
            ms = self._member_rows[tid] = tuple(
                MemberRow(m.name, m.type, m.bit_offset, m.bit_size) for m in (t.members or ()))
        return ms

    def named(self, name: str, kind: str) -> tuple:
        return self._by_name.get((name, kind), ())

    def layout_signatures(self, name: str, kind: str) -> list:
        out = []
        for (tid, _k, size, _ref) in self.named(name, kind):
            if size is not None:
                sig = ",".join(f"{m.name}:{m.bit_offset}:{m.bit_size}" for m in self.members(tid))
                out.append((tid, size, sig))
        return out

    def functions(self, name: str) -> list:
        return self._funcs.get(name, [])

    def params(self, proto: int) -> list:
        return [(p.name, p.type) for p in (self.graph.types[proto].params or ())]

    def variadic(self, proto: int) -> bool:
        return bool(self.graph.types[proto].variadic)

    def all_composites(self) -> list:
        rows = [(tid, t.kind, t.name, t.size) for tid, t in enumerate(self.graph.types)
                if t.kind in COMPOSITE and t.name and t.size is not None]
        rows.sort(key=lambda r: (r[2], r[1], r[0]))
        return rows

    def anonymous_typedefs(self) -> list:
        if self._anon is None:
            types = self.graph.types
            self._anon = [(tid, t.name, t.ref) for tid, t in enumerate(types)
                          if t.kind == TYPEDEF and t.name and t.ref is not None
                          and types[t.ref].kind in COMPOSITE and not types[t.ref].name]
        return self._anon

    def type_by_spelling(self, spelling: str) -> Optional[int]:
        if self._spellings is None:
            sp: dict = {}
            for tid, t in enumerate(self.graph.types):
                if t.kind in TYPE_ROW_KINDS:
                    sp.setdefault(self._spell(tid), tid)
            self._spellings = sp
        return self._spellings.get(spelling)

    def functions_like(self, pattern: str) -> list:
        rx = like_regex(pattern)
        return [(f.name, f.proto, int(f.static), f.file, f.line, f.module)
                for f in self.graph.functions if rx.fullmatch(f.name)]
