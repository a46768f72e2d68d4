"""Read-only access to one per-kernel DB (the `kt_*` tables and `meta`), with small caches.

Only the stdlib `sqlite3` is used (no SQLAlchemy: opening a DB and answering the first query
must stay within a few milliseconds).  Every statement is a constant string with `?`
parameters.  One connection per DB, shared by threads under a lock; the caches are plain
dicts filled with immutable tuples, so readers never see partial entries.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
from typing import NamedTuple, Optional

from .errors import NoKernelDB

# kinds (the strings dbhive.model uses)
STRUCT, UNION, TYPEDEF, PTR, ARRAY, FWD, ENUM, FUNC_PROTO = (
    "struct", "union", "typedef", "ptr", "array", "fwd", "enum", "func_proto")
COMPOSITE = (STRUCT, UNION)
QUALIFIERS = ("const", "volatile", "restrict", "type_tag")
TRANSPARENT = (TYPEDEF,) + QUALIFIERS

_SQL_TYPE = ("SELECT id, kind, name, size, ref, nelems, signed, encoding, spelling "
             "FROM kt_types WHERE id = ?")
_SQL_MEMBERS = ("SELECT name, member_type, bit_offset, bit_size FROM kt_members "
                "WHERE type_id = ? ORDER BY idx")
_SQL_BY_NAME = ("SELECT id, kind, size, ref FROM kt_types WHERE name = ? AND kind = ? "
                "ORDER BY id")
_SQL_LAYOUTS = ("SELECT t.id, t.size, group_concat(m.name || ':' || m.bit_offset || ':' || "
                "m.bit_size, ',') FROM kt_types t LEFT JOIN kt_members m ON m.type_id = t.id "
                "WHERE t.name = ? AND t.kind = ? AND t.size IS NOT NULL "
                "GROUP BY t.id ORDER BY t.id")
_SQL_FUNCS = ("SELECT name, proto, static, file, line, module FROM kt_functions "
              "WHERE name = ? ORDER BY id")
_SQL_PARAMS = "SELECT name, param_type FROM kt_params WHERE proto_id = ? ORDER BY idx"
_SQL_META = "SELECT key, value FROM meta"
_SQL_VARIADIC = "SELECT variadic FROM kt_types WHERE id = ?"
_SQL_HAS_KT = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'kt_types'"
_SQL_ALL_COMPOSITES = ("SELECT id, kind, name, size FROM kt_types "
                       "WHERE kind IN ('struct', 'union') AND name IS NOT NULL "
                       "AND size IS NOT NULL ORDER BY name, kind, id")
_SQL_ALL_TYPES = ("SELECT id, kind, name, size, ref, nelems, signed, encoding, spelling "
                  "FROM kt_types")
_SQL_ALL_MEMBERS = ("SELECT type_id, name, member_type, bit_offset, bit_size FROM kt_members "
                    "ORDER BY type_id, idx")


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


def _ro_uri(path: str) -> str:
    return "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"


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
        self.ptr_size = 4 if self.meta.get("arch") in ("i386", "i686", "x86", "arm", "armv7l") else 8
        self._found: dict = {}
        self._layouts: dict = {}

    @property
    def source(self) -> str:
        return f"{self.label}:{self.path}"

    def close(self) -> None:
        pass

    # ---- derived walks -----------------------------------------------------
    def strip(self, tid: int) -> int:
        """Follow typedefs and qualifiers (a chain longer than the number of types is a
        cycle: the DB is damaged)."""
        t = self.type(tid)
        hops = 0
        while t.kind in TRANSPARENT and t.ref is not None:
            t = self.type(t.ref)
            hops += 1
            if hops > _MAX_CHAIN:
                raise _cycle(self, tid)
        return t.id

    def strip_cv(self, tid: int) -> int:
        t = self.type(tid)
        hops = 0
        while t.kind in QUALIFIERS and t.ref is not None:
            t = self.type(t.ref)
            hops += 1
            if hops > _MAX_CHAIN:
                raise _cycle(self, tid)
        return t.id

    def sizeof(self, tid: int) -> Optional[int]:
        t = self.type(tid)
        mult = 1
        for _ in range(_MAX_CHAIN):
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

    def preload(self) -> None:
        pass


_MAX_CHAIN = 1 << 16


def _cycle(src: TypeSource, tid: int):
    from .errors import CorruptDB
    return CorruptDB(f"{src.path}: type id {tid} is part of a reference cycle (damaged input)")


class KernelDB(TypeSource):
    """One DB file, opened read-only."""

    label = "db"

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise NoKernelDB(f"no such DB file: {path}")
        self.path = os.path.abspath(path)
        try:
            self._conn = sqlite3.connect(_ro_uri(path), uri=True, check_same_thread=False)
            self.meta = dict(self._conn.execute(_SQL_META).fetchall())
            self.has_kt = self._conn.execute(_SQL_HAS_KT).fetchone() is not None
        except sqlite3.DatabaseError as e:
            raise NoKernelDB(f"{path} is not a dbhive kernel DB ({e})") from None
        self._lock = threading.Lock()
        self._init_caches()
        self._types: dict = {}
        self._members: dict = {}
        self._by_name: dict = {}
        self._funcs: dict = {}
        self._params: dict = {}

    def close(self) -> None:
        self._conn.close()

    def _query(self, sql: str, args: tuple = ()) -> list:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def type(self, tid: int) -> TypeRow:
        t = self._types.get(tid)
        if t is None:
            rows = self._query(_SQL_TYPE, (tid,))
            if not rows:
                raise KeyError(f"type id {tid} not in {self.path}")
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

    def preload(self) -> None:
        """Load every type and member row at once (for whole-DB walks such as `dump`)."""
        with self._lock:
            types = {r[0]: TypeRow(*r) for r in self._conn.execute(_SQL_ALL_TYPES)}
            members: dict = {}
            for (tid, name, mt, bo, bs) in self._conn.execute(_SQL_ALL_MEMBERS):
                members.setdefault(tid, []).append(MemberRow(name, mt, bo, bs))
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

    def type(self, tid: int) -> TypeRow:
        r = self._rows.get(tid)
        if r is None:
            if not 0 <= tid < len(self.graph.types):
                raise KeyError(f"type id {tid} not in {self.path}")
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
