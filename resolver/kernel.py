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


class KernelDB:
    """One DB file, opened read-only."""

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
        self.ptr_size = 4 if self.meta.get("arch") in ("i386", "i686", "x86", "arm", "armv7l") else 8
        self._types: dict = {}
        self._members: dict = {}
        self._by_name: dict = {}
        self._found: dict = {}
        self._layouts: dict = {}
        self._funcs: dict = {}
        self._params: dict = {}

    def close(self) -> None:
        self._conn.close()

    def _query(self, sql: str, args: tuple = ()) -> list:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # ---- types -------------------------------------------------------------
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

    def strip(self, tid: int) -> int:
        """Follow typedefs and qualifiers."""
        t = self.type(tid)
        while t.kind in TRANSPARENT and t.ref is not None:
            t = self.type(t.ref)
        return t.id

    def strip_cv(self, tid: int) -> int:
        t = self.type(tid)
        while t.kind in QUALIFIERS and t.ref is not None:
            t = self.type(t.ref)
        return t.id

    def sizeof(self, tid: int) -> Optional[int]:
        t = self.type(tid)
        while True:
            if t.size is not None:
                return t.size
            if t.kind in TRANSPARENT and t.ref is not None:
                t = self.type(t.ref)
            elif t.kind == ARRAY:
                es = self.sizeof(t.ref)
                return None if es is None else (t.nelems or 0) * es
            elif t.kind == PTR:
                return self.ptr_size
            else:
                return None

    def spelling(self, tid: int) -> str:
        return self.type(tid).spelling

    def named(self, name: str, kind: str) -> tuple:
        """(id, kind, size, ref) of every type with this name and kind, in id order."""
        key = (name, kind)
        r = self._by_name.get(key)
        if r is None:
            r = self._by_name[key] = tuple(self._query(_SQL_BY_NAME, key))
        return r

    def find_composite(self, name: str, kind: Optional[str] = None) -> Optional[int]:
        """The type id of struct/union `name` (the first complete layout in id order), or of
        the struct/union a typedef `name` stands for.  None when absent."""
        kinds = (kind,) if kind else (STRUCT, UNION)
        for k in kinds:
            rows = self.named(name, k)
            for (tid, _k, size, _ref) in rows:
                if size is not None:
                    return tid
        if kind is None:
            for (tid, _k, _size, _ref) in self.named(name, TYPEDEF):
                sid = self.strip(tid)
                st = self.type(sid)
                if st.kind in COMPOSITE:
                    if st.size is None and st.name:       # typedef of a forward declaration
                        return self.find_composite(st.name, st.kind)
                    return sid
                if st.kind == FWD and st.name:
                    return self.find_composite(st.name, st.encoding or STRUCT)
        return None

    def layouts(self, name: str, kind: str) -> int:
        """How many different layouts struct/union `name` has in this DB."""
        key = (name, kind)
        n = self._layouts.get(key)
        if n is None:
            rows = self.named(name, kind)
            if sum(1 for r in rows if r[2] is not None) <= 1:
                n = 1
            else:
                n = len({(size, sig) for (_id, size, sig) in self._query(_SQL_LAYOUTS, key)})
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
        """Member `name` of composite `tid`, looking through anonymous structs/unions as C does."""
        key = (tid, name)
        if key in self._found:
            return self._found[key]
        found = None
        for m in self.members(tid):
            if m.name == name:
                found = FoundMember(m.bit_offset, m.type, m.bit_size)
                break
        if found is None:
            for m in self.members(tid):
                if not m.name:
                    inner = self.strip(m.type)
                    if self.type(inner).kind in COMPOSITE:
                        sub = self.find_member(inner, name)
                        if sub is not None:
                            found = FoundMember(m.bit_offset + sub.bit_offset, sub.type,
                                                sub.bit_size)
                            break
        self._found[key] = found
        return found

    # ---- functions ---------------------------------------------------------
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

    # ---- bulk (dump) -------------------------------------------------------
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
