"""A kernel DB as a `core.TypeView`: types read on demand through the schema's indexes
(kt_types by id and by name, members / enumerators / params by type id), so relocating a
BPF object against a kernel touches only the types its relocations reach -- milliseconds,
where loading the whole graph takes a second.
"""
from __future__ import annotations

from .. import model as M
from .. import schema as S
from ..errors import CorruptDB
from .core import TypeView, essential

_SQL_TYPE = S.select_sql(S.KT_TYPES, ("kind", "name", "size", "ref", "nelems", "variadic",
                                      "signed", "encoding"), "id = ?")
_SQL_MEMBERS = S.select_sql(S.KT_MEMBERS, ("name", "member_type", "bit_offset", "bit_size"),
                            "type_id = ?", "idx")
_SQL_ENUMS = S.select_sql(S.KT_ENUMERATORS, ("name", "value"), "type_id = ?", "idx")
_SQL_PARAMS = S.select_sql(S.KT_PARAMS, ("name", "param_type"), "proto_id = ?", "idx")
_SQL_NAMED = S.select_sql(S.KT_TYPES, ("id", "name"), "name = ?", "id")
# names with a flavour suffix (`foo___v2`): a range scan of the same index
_SQL_FLAVOURED = S.select_sql(S.KT_TYPES, ("id", "name"), "name > ? AND name < ?", "id")
_SQL_COUNT = "SELECT max(id) FROM kt_types"


class DbView(TypeView):
    def __init__(self, path: str):
        self.conn, self.meta = S.open_db(path)
        self.path = path
        self.ptr_size = M.pointer_size(self.meta.get("arch") or "")
        self._types: dict = {}
        self.n = (self._rows(_SQL_COUNT)[0][0] or 0) + 1

    def close(self) -> None:
        self.conn.close()

    def _rows(self, sql: str, args: tuple = ()) -> list:
        return S.fetch_all(self.conn, self.path, sql, args)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def type(self, tid: int) -> M.Type:
        t = self._types.get(tid)
        if t is not None:
            return t
        rows = self._rows(_SQL_TYPE, (tid,))
        if not rows:
            raise CorruptDB(f"{self.path}: type id {tid} is referred to but not in the DB")
        kind, name, size, ref, nelems, variadic, signed, encoding = rows[0]
        t = M.Type(M.own_kind(kind), name, size, ref, nelems=nelems, variadic=bool(variadic),
                   signed=None if signed is None else bool(signed), encoding=encoding)
        if kind in M.COMPOSITE:
            t.members = [M.Member(n, mt, bo, bs)
                         for n, mt, bo, bs in self._rows(_SQL_MEMBERS, (tid,))]
        elif kind == M.ENUM:
            t.enumerators = [(n, int(v)) for n, v in self._rows(_SQL_ENUMS, (tid,))]
        elif kind == M.FUNC_PROTO:
            t.params = [M.Param(n, pt) for n, pt in self._rows(_SQL_PARAMS, (tid,))]
        for r in ([t.ref] if t.ref is not None else []) + \
                [m.type for m in t.members or ()] + [p.type for p in t.params or ()]:
            if not 0 <= r < self.n:
                raise CorruptDB(f"{self.path}: type id {tid} refers to type id {r}, "
                                f"which does not exist")
        self._types[tid] = t
        return t

    def by_essential_name(self, name: str) -> list:
        ids = [tid for tid, _ in self._rows(_SQL_NAMED, (name,))]
        ids += [tid for tid, n in self._rows(_SQL_FLAVOURED,
                                             (name + "___", name + "___\U0010ffff"))
                if essential(n) == name]
        return sorted(set(ids))
