"""DWARF records -> hash-consed type keys -> the shared TypeGraph.

Every type becomes a *key*: a flat tuple of its kind, name, size, ... and the ids of the
types it refers to.  Interning keys (`KeyTable`) deduplicates the copies of a header's
types that every compilation unit carries, so a type is stored once however many units
declare it; a struct with the same name but a different layout gets a different key and is
kept, tagged with the unit it first came from (`origin`).

References through a pointer to a *named* struct/union/typedef become placeholders
`(FWD, kind, name)`: that breaks the cycles C allows (`struct list_head *next`) and makes
`struct file *` one type whatever unit it comes from.  `finalize` points each placeholder
at the first complete type of that name (or leaves a FWD when there is none), then merges
the types that became identical.

Key layouts (ids of referenced types marked *):
  (INT, name, size, signed, encoding)   (FLOAT, name, size)   (FWD, kind, name)
  (PTR|CONST|VOLATILE|RESTRICT, *ref)   (PTR, *ref, size) when a pointer is not 8 bytes   (TYPEDEF, name, *ref)   (ARRAY, *elem, nelems)
  (STRUCT|UNION, name, size, (m_name, *m_type, bit_offset, bit_size) ...)
  (ENUM, name, size, signed, (e_name, value) ...)
  (FUNC_PROTO, *ret, variadic, (p_name, *p_type) ...)
"""
from __future__ import annotations

from .. import model as M
from .forms import FormError, c_enabled
from .scan import (R_ALIAS, R_ARRAY, R_BASE, R_ENUM, R_KNOWN, R_PROTO, R_PTR, R_QUAL,
                   R_STRUCT, R_SUB, R_TYPEDEF, R_UNSPEC)

VOID_KEY = (M.VOID,)

_VP = 1 << 62            # memo-key bit: "reached through a pointer"

# DW_ATE_* -> (model kind, signed, encoding)
_ATE = {
    0x01: (M.INT, False, "unsigned"),     # address
    0x02: (M.INT, False, "bool"),         # boolean
    0x03: (M.FLOAT, None, None),          # complex_float
    0x04: (M.FLOAT, None, None),          # float
    0x05: (M.INT, True, "signed"),        # signed
    0x06: (M.INT, True, "char"),          # signed_char
    0x07: (M.INT, False, "unsigned"),     # unsigned
    0x08: (M.INT, False, "char"),         # unsigned_char
    0x09: (M.FLOAT, None, None),          # imaginary_float
    0x0d: (M.INT, True, "signed"),        # signed_fixed
    0x0e: (M.INT, False, "unsigned"),     # unsigned_fixed
    0x0f: (M.FLOAT, None, None),          # decimal_float
    0x10: (M.INT, False, "unsigned"),     # UTF
}


# the C loops (dwarf/_cscan.c: the interner's, remap_key, KeyTable.merge), or None
if c_enabled():
    from . import _cscan as _c
    _c.configure_keys({k: getattr(M, k) for k in (
        "FWD", "PTR", "TYPEDEF", "FUNC_PROTO", "ARRAY", "ENUM", "FLOAT", "INT", "CONST",
        "VOLATILE", "RESTRICT", "TYPE_TAG", "STRUCT", "UNION")}, _ATE)
    _c.configure_model(M.Type, M.Member, M.Param, M.Function, M.VOID)
else:
    _c = None


class KeyTable:
    """Interned type keys; id = position.  Children are always interned before parents."""

    def __init__(self):
        self.ids = {VOID_KEY: 0}
        self.keys = [VOID_KEY]
        self.origins = [None]

    def intern(self, key, origin=None) -> int:
        i = self.ids.get(key)
        if i is None:
            i = self.ids[key] = len(self.keys)
            self.keys.append(key)
            self.origins.append(origin)
        return i

    def merge(self, keys, origins) -> list:
        """Intern another table's keys (in its order); returns its id -> our id."""
        if _c is not None:
            return _c.merge_into(keys, origins, self.ids, self.keys, self.origins)
        m = [0] * len(keys)
        for i in range(1, len(keys)):
            m[i] = self.intern(remap_key(keys[i], m), origins[i])
        return m


def remap_key(key, m):
    """`key` with its type ids replaced: new = m[old] (m: list or a callable)."""
    if _c is not None and m.__class__ is list:
        return _c.remap_key(key, m)
    f = m.__getitem__ if isinstance(m, list) else m
    k = key[0]
    if k == M.PTR or k == M.CONST or k == M.VOLATILE or k == M.RESTRICT or k == M.TYPE_TAG:
        return (k, f(key[1])) + key[2:]
    if k == M.TYPEDEF:
        return (k, key[1], f(key[2]))
    if k == M.ARRAY:
        return (k, f(key[1]), key[2])
    if k == M.STRUCT or k == M.UNION:
        out = list(key)
        for j in range(4, len(out), 4):
            out[j] = f(out[j])
        return tuple(out)
    if k == M.FUNC_PROTO:
        out = list(key)
        out[1] = f(out[1])
        for j in range(4, len(out), 2):
            out[j] = f(out[j])
        return tuple(out)
    return key


def key_children(key) -> tuple:
    """The type ids a key refers to (the positions remap_key maps)."""
    k = key[0]
    if k == M.PTR or k == M.CONST or k == M.VOLATILE or k == M.RESTRICT or k == M.TYPE_TAG \
            or k == M.ARRAY:
        return (key[1],)
    if k == M.TYPEDEF:
        return (key[2],)
    if k == M.STRUCT or k == M.UNION:
        return key[4::4]
    if k == M.FUNC_PROTO:
        return (key[1],) + key[4::2]
    return ()


def closure(keys: list, ids) -> set:
    """`ids` and every id their keys hold, transitively (ids only point down: no cycles)."""
    if _c is not None:
        return _c.closure(keys, ids)
    seen = set(ids)
    stack = list(seen)
    while stack:
        for c in key_children(keys[stack.pop()]):
            if c not in seen:
                seen.add(c)
                stack.append(c)
    return seen


class UnitInterner:
    """Turns the records of one unit at a time into interned keys.

    `other(off)` returns the record at a virtual offset outside the current unit (type
    units, dwz partial units, DW_FORM_ref_addr), scanning that unit on demand."""

    def __init__(self, table: KeyTable, other, func_symbols=frozenset(), c=None):
        """`c`: the C interner (dwarf/_cscan.c, configured by reader.py), or None."""
        self.t = table
        self.c = c
        self.func_symbols = func_symbols
        self.other = other
        self.pmemo: dict = {}        # memo for DIEs outside the current unit (kept)
        # (name, proto, static, file, line) -> rank: 0 has code, 1 reached only by name
        self.functions: dict = {}
        self.dangling = 0            # references to DIEs that are not types
        # definition identity (scan.UnitScan.skey) -> type id: what the scanner may skip
        self.known: dict = {}
        self.used = None             # a set: gets the ids the DIEs became (see unit())

    def unit(self, unit, records, files_of, origin=None):
        """Intern every type and function of one unit.  `origin`: the name new types
        are tagged with (default: the unit's own name).  `files_of(offset)`: the
        decl_file table of the unit holding that DIE offset."""
        self.recs = records
        self.lo = unit.base
        self.hi = unit.space + unit.end
        self.memo = {}
        self.origin = origin or unit.name
        if self.c is not None:
            t = self.t
            subs, dangling = self.c.intern_unit(records, self.lo, self.hi, self.memo,
                                                self.pmemo, t.ids, t.keys, t.origins,
                                                self.origin, self.known, self.other,
                                                unit.offset)
            self.dangling += dangling
        else:
            subs = self._intern_records(records, unit)
        for off, rec in subs:
            self._function(off, rec, files_of)
        if self.used is not None:
            self.used.update(self.memo.values())
        self.memo = None
        self.recs = None

    def _intern_records(self, records, unit) -> list:
        """Intern every type record of the unit; returns its subprogram records
        [(offset, record)] (the C interner's loop is the same: _cscan.c intern_unit)."""
        rid = self.rid
        memo = self.memo
        subs = []
        try:
            for off, rec in records.items():
                if rec[0] == R_SUB:
                    if not rec[4]:
                        subs.append((off, rec))
                elif off not in memo:
                    rid(off)
        except RecursionError:
            raise FormError("type references form a cycle", unit.offset) from None
        return subs

    def rec(self, off):
        if self.lo <= off < self.hi:
            return self.recs.get(off)
        return self.other(off)

    def rid(self, off, vp=False) -> int:
        """Type id of the DIE at virtual offset `off` (`vp`: reached through a pointer)."""
        if off is None:
            return 0
        mk = off | _VP if vp else off
        memo = self.memo
        r = memo.get(mk)
        if r is not None:
            return r
        local = self.lo <= off < self.hi
        if local:
            rec = self.recs.get(off)
        else:
            r = self.pmemo.get(mk)
            if r is not None:
                memo[mk] = r
                return r
            rec = self.other(off)
        if rec is None:
            self.dangling += 1
            return 0
        # C allows cycles only through pointers, which stop at named types (placeholders);
        # a malformed file with a by-value cycle ends in RecursionError (see unit()).
        ids = self.t.ids
        k = rec[0]
        skey = None
        if k == R_STRUCT:
            _, kind, name, size, decl, members, skey = rec
            if decl or size is None or (vp and name):
                key = (M.FWD, kind, name) if name else None
                skey = None
            else:
                key = [kind, name, size]
                key += members
                rid = self.rid
                for j in range(4, len(key), 4):
                    t = key[j]
                    r = memo.get(t)
                    key[j] = r if r is not None else rid(t)
                    if key[j + 1].__class__ is tuple:
                        # ('msb', base bits, DW_AT_bit_offset): big-endian-style numbering
                        # within a storage unit the size of the member's type
                        _, base, old = key[j + 1]
                        key[j + 1] = base + (self._size_of(t) or 0) * 8 - old - key[j + 2]
                key = tuple(key)
        elif k == R_PTR:
            t = rec[1]
            r = memo.get(t | _VP) if t is not None else 0
            key = (M.PTR, r if r is not None else self.rid(t, True))
            if rec[2] is not None and rec[2] != 8:      # 32-bit targets: keep the size
                key += (rec[2],)
        elif k == R_TYPEDEF:
            name = rec[1]
            if vp and name:
                key = (M.FWD, M.TYPEDEF, name)
            else:
                t = rec[2]
                r = memo.get(t) if t is not None else 0
                key = (M.TYPEDEF, name, r if r is not None else self.rid(t))
        elif k == R_QUAL:
            t = rec[2]
            r = memo.get(t | _VP if vp else t) if t is not None else 0
            if r is None:
                r = self.rid(t, vp)
            key = (rec[1], r) if rec[1] is not None else None   # _Atomic: transparent
        elif k == R_BASE:
            _, name, size, enc = rec
            kind, signed, encoding = _ATE.get(enc, (M.INT, False, "unsigned"))
            if kind is M.FLOAT:
                key = (M.FLOAT, name, size)
            else:
                key = (M.INT, name, size, signed, encoding)
        elif k == R_PROTO:
            key = self._proto_key(rec[1], rec[2], rec[3])
        elif k == R_ARRAY:
            r = self.rid(rec[1], vp)
            for n in reversed(rec[2]):
                r = self.t.intern((M.ARRAY, r, n))
            key = None
        elif k == R_KNOWN:
            _, r, kind, name, size = rec
            key = (M.FWD, kind, name) if vp and kind != M.ENUM else None
        elif k == R_ENUM:
            _, name, size, decl, values, under, skey = rec
            if decl or size is None:
                key = (M.FWD, M.ENUM, name) if name else None
                skey = None
            else:
                signed = self._signed(under, values)
                key = [M.ENUM, name, size, signed]
                key += values
                if not signed:
                    mask = (1 << (8 * size)) - 1
                    for j in range(5, len(key), 2):
                        if key[j] < 0:
                            key[j] &= mask
                key = tuple(key)
        elif k == R_ALIAS:
            r = self.rid(rec[1], vp)
            key = None
        else:                                 # R_UNSPEC (void), or a subprogram used as a type
            key = None
            r = 0
            if k != R_UNSPEC:
                self.dangling += 1
        if key is not None:
            r = ids.get(key)
            if r is None:
                r = self.t.intern(key, self.origin)
            if skey is not None:
                self.known[skey] = r
        elif r is None:
            r = 0
        memo[mk] = r
        if not local:
            self.pmemo[mk] = r
        return r

    def _proto_key(self, ret, params, variadic) -> tuple:
        """(FUNC_PROTO, ret, variadic, name, type, ...); params: flat [name, type, origin]*."""
        memo = self.memo
        rid = self.rid
        key = [M.FUNC_PROTO, rid(ret, True), variadic]
        key += params
        del key[5::3]                           # drop the abstract origins
        for j in range(4, len(key), 2):         # parameter types
            t = key[j]
            if t is None:
                key[j] = 0
            else:
                r = memo.get(t | _VP)
                key[j] = r if r is not None else rid(t, True)
        return tuple(key)

    def _signed(self, under, values) -> bool:
        if under is not None:
            r = self.rec(under)
            seen = 0
            while r is not None and r[0] in (R_TYPEDEF, R_QUAL) and seen < 16:
                r = self.rec(r[2])
                seen += 1
            if r is not None and r[0] == R_BASE:
                return _ATE.get(r[3], (None, False))[1] is True
        return any(values[j] < 0 for j in range(1, len(values), 2))

    def _size_of(self, off):
        seen = 0
        r = self.rec(off) if off is not None else None
        while r is not None and seen < 32:
            k = r[0]
            if k == R_BASE or k == R_ENUM:
                return r[2]
            if k == R_STRUCT:
                return r[3]
            if k == R_KNOWN:
                return r[4]
            if k == R_PTR:
                return r[2] or 8
            if k == R_TYPEDEF or k == R_QUAL:
                r = self.rec(r[2]) if r[2] is not None else None
            else:
                return None
            seen += 1
        return None

    def _function(self, off, rec, files_of):
        (_, name, ret, ext, decl, dfile, dline, has_code, origin, params, variadic) = rec
        file_die = off           # decl_file indexes the line table of this DIE's unit
        seen = 0
        while origin is not None and seen < 8:
            o = self.rec(origin)
            if o is None or o[0] != R_SUB:
                break
            name = name if name is not None else o[1]
            ret = ret if ret is not None else o[2]
            ext = ext or o[3]
            if dfile is None and o[5] is not None:
                dfile, file_die = o[5], origin
            dline = dline if dline is not None else o[6]
            if o[9] or not params or all(params[j] is None and params[j + 1] is None
                                         for j in range(0, len(params), 3)):
                params, variadic = o[9], o[10]
            origin = o[8]
            seen += 1
        # like pahole: a definition counts when it has code or when an ELF function symbol
        # has its name (folded into an identical function, or DWARF lacking the
        # out-of-line copy of an inline)
        if not name or (has_code != 2 and name not in self.func_symbols):
            return
        proto = self.t.intern(self._proto_key(ret, params, variadic))
        file = None
        if dfile is not None:
            files = files_of(file_die)
            if 0 <= dfile < len(files):
                file = files[dfile]
        fkey = (name, proto, not ext, file, dline)
        rank = 0 if has_code == 2 else 1
        if self.functions.get(fkey, 2) > rank:
            self.functions[fkey] = rank

    def function_list(self) -> list:
        """[(name, proto, static, file, line, rank)]"""
        return [k + (v,) for k, v in self.functions.items()]


# ---------------------------------------------------------------------------

_MERGE_ROUNDS = 8


def _root(canon: list, i: int) -> int:
    """The root of `i` in the union-find forest `canon` (halving the path on the way)."""
    while canon[i] != i:
        canon[i] = canon[canon[i]]
        i = canon[i]
    return i


def merge_identical(keys: list, canon: list, rounds: int) -> None:
    """Step 2 of finalize (the C loop is the same: _cscan.c merge_identical): `canon`, a
    union-find forest over the keys, gets each key that equals an earlier one once its ids
    are replaced by their roots merged into that one; up to `rounds` passes."""
    def find(i):
        return _root(canon, i)

    for _round in range(rounds):
        seen: dict = {}
        changed = False
        for i in range(len(keys)):
            if canon[i] != i:
                continue
            key = remap_key(keys[i], find)
            j = seen.setdefault(key, i)
            if j != i:
                canon[i] = j
                changed = True
        if not changed:
            break


def finalize(table: KeyTable, functions, module: str = "vm",
             targets: dict = None) -> M.TypeGraph:
    """Resolve placeholders, merge what became identical, and build the TypeGraph.
    `functions`: (name, proto, static, file, line, rank[, module]) tuples (`module` when a
    function's differs from the default).  `targets`: {placeholder id: type id} for
    placeholders that stand for one given layout rather than the first of their name
    (dbhive/modules/merge.py: a module's own layout of a name the kernel also has)."""
    keys = table.keys
    n = len(keys)
    canon = list(range(n))
    if _c is not None:          # the same three steps in C (_cscan.c)
        _c.placeholder_targets(keys, canon, targets)
        _c.merge_identical(keys, canon, _MERGE_ROUNDS)
        types, new_id = _c.emit_types(keys, table.origins, canon)
        g = M.TypeGraph(types=types, source="dwarf")
        _add_functions(g, functions, new_id, module)
        return g
    # 1. placeholders -> the first complete type of that kind and name
    first: dict = {}
    for i, key in enumerate(keys):
        k = key[0]
        if k == M.STRUCT or k == M.UNION or k == M.ENUM or k == M.TYPEDEF:
            if key[1] is not None:
                first.setdefault((k, key[1]), i)
    for i, key in enumerate(keys):
        if key[0] == M.FWD:
            target = targets.get(i) if targets else None
            if target is None:
                target = first.get((key[1], key[2]))
            if target is not None:
                canon[i] = target
            elif key[1] == M.TYPEDEF:
                canon[i] = 0

    # 2. merge types that became identical (a few rounds reach the fixpoint)
    merge_identical(keys, canon, _MERGE_ROUNDS)
    # 3. emit
    new_id = [0] * n
    order = []
    for i in range(n):
        if _root(canon, i) == i:
            new_id[i] = len(order)
            order.append(i)
    for i in range(n):
        new_id[i] = new_id[_root(canon, i)]
    g = M.TypeGraph(types=[], source="dwarf")
    for i in order:
        g.types.append(_type_from_key(remap_key(keys[i], new_id), table.origins[i]))
    _add_functions(g, functions, new_id, module)
    return g


def _add_functions(g: M.TypeGraph, functions, new_id: list, module: str) -> None:
    # functions with code first (a name lookup finds the real definition before an inline
    # wrapper of the same name), otherwise in unit order
    if _c is not None:
        made = _c.emit_functions(functions, new_id, module)
        if made is not None:
            g.functions = made
            return
    seen_f = set()
    for (name, proto, static, file, line, _rank, *mod) in sorted(functions, key=lambda f: f[5]):
        fmod = mod[0] if mod else module
        fk = (name, new_id[proto], static, file, line, fmod)
        if fk in seen_f:
            continue
        seen_f.add(fk)
        g.functions.append(M.Function(name, new_id[proto], static, file, line, fmod))


def _type_from_key(key, origin) -> M.Type:
    k = M.own_kind(key[0])          # a worker's keys came pickled (parallel.py)
    if k == M.VOID:
        return M.Type(M.VOID, "void")
    if k == M.INT:
        return M.Type(M.INT, key[1], key[2], signed=key[3], encoding=key[4])
    if k == M.FLOAT:
        return M.Type(M.FLOAT, key[1], key[2])
    if k == M.FWD:
        return M.Type(M.FWD, key[2], encoding=M.own_kind(key[1]))
    if k == M.PTR:      # size kept only when it is not the model's default of 8
        return M.Type(M.PTR, ref=key[1], size=key[2] if len(key) > 2 else None)
    if k == M.CONST or k == M.VOLATILE or k == M.RESTRICT or k == M.TYPE_TAG:
        return M.Type(k, ref=key[1])
    if k == M.TYPEDEF:
        return M.Type(M.TYPEDEF, key[1], ref=key[2], origin=origin)
    if k == M.ARRAY:
        return M.Type(M.ARRAY, ref=key[1], nelems=key[2])
    if k == M.STRUCT or k == M.UNION:
        members = [M.Member(key[j], key[j + 1], key[j + 2], key[j + 3])
                   for j in range(3, len(key), 4)]
        return M.Type(k, key[1], key[2], members=members, origin=origin)
    if k == M.ENUM:
        vals = [(key[j], key[j + 1]) for j in range(4, len(key), 2)]
        return M.Type(M.ENUM, key[1], key[2], enumerators=vals, signed=key[3], origin=origin)
    if k == M.FUNC_PROTO:
        params = [M.Param(key[j], key[j + 1]) for j in range(3, len(key), 2)]
        return M.Type(M.FUNC_PROTO, ref=key[1], params=params, variadic=key[2])
    raise ValueError(f"unknown key kind {k!r}")
