"""The hot path: walk the DIE tree of one unit over the raw bytes and collect compact
records of the DIEs the type model needs.

What is decoded: every type DIE (with its members, enumerators, subranges, parameters) and
every subprogram with its direct formal parameters.  What is skipped without being decoded:
function bodies, lexical blocks, variables, call sites, ... — via DW_AT_sibling when the
producer emitted it (GCC does for nearly every DIE with children), else by each
abbreviation's precomputed fixed size or compiled skip decoder.

Records (tuples; first element is the record kind, offsets are virtual DIE offsets):
  (R_BASE, name, size, dw_encoding)        (R_UNSPEC, name)
  (R_PTR, target, size)    (R_QUAL, model_kind, target)    (R_TYPEDEF, name, target)
  (R_STRUCT, model_kind, name, size, declaration, members)
        members: flat [name, type, bit_offset, bit_size, ...] (see forms.FINISH_MEMBER)
  (R_ENUM, name, size, declaration, flat [name, value, ...], underlying type)
  (R_ARRAY, element, [nelems per dimension])
  (R_PROTO, return, flat [name, type, abstract_origin, ...], variadic)
  (R_SUB, name, return, external, declaration, decl_file, decl_line, code (2/1/0), origin,
         flat params as R_PROTO, variadic)
  (R_ALIAS, target)   a declaration standing for a type unit's type (DW_AT_signature)
  (R_KNOWN, type id, model kind, name, size)   a struct/union/enum definition already
        interned from an earlier unit (same name, size, decl file and line): its children
        were jumped over, not decoded
R_STRUCT and R_ENUM end with their `skey` (kind, name, size, decl file, decl line), or None
when the definition may not be skipped next time (no file/line, or it holds nested types
that other DIEs could refer to).
"""
from __future__ import annotations

from .. import model as M
from .forms import (AT, FINISH_ENUMERATOR, FINISH_MEMBER, FINISH_PARAM, TAG, finish_store,
                          WANT_ENUMERATOR, WANT_MEMBER, WANT_PARAM, WANT_SIBLING,
                          WANT_AGG, WANT_SUBPROGRAM, WANT_SUBRANGE, WANT_TYPE, FormError, uleb)

# record kinds
R_BASE, R_UNSPEC, R_PTR, R_QUAL, R_TYPEDEF, R_STRUCT, R_ENUM, R_ARRAY, R_PROTO, R_SUB, \
    R_ALIAS, R_KNOWN = range(12)

# what to do with a DIE, by tag
(S_SKIP, S_BASE, S_PTR, S_TYPEDEF, S_QUAL, S_STRUCT, S_ENUM, S_ARRAY, S_SUBRTYPE, S_UNSPEC,
 S_SUBPROGRAM, S_MEMBER, S_ENUMERATOR, S_SUBRANGE, S_PARAM, S_VARIADIC) = range(16)

_TAG_ACTION = {
    TAG["base_type"]: S_BASE, TAG["pointer_type"]: S_PTR, TAG["reference_type"]: S_PTR,
    TAG["rvalue_reference_type"]: S_PTR, TAG["typedef"]: S_TYPEDEF,
    TAG["const_type"]: S_QUAL, TAG["volatile_type"]: S_QUAL, TAG["restrict_type"]: S_QUAL,
    TAG["atomic_type"]: S_QUAL,
    TAG["structure_type"]: S_STRUCT, TAG["class_type"]: S_STRUCT, TAG["union_type"]: S_STRUCT,
    TAG["enumeration_type"]: S_ENUM, TAG["array_type"]: S_ARRAY,
    TAG["subroutine_type"]: S_SUBRTYPE, TAG["unspecified_type"]: S_UNSPEC,
    TAG["subprogram"]: S_SUBPROGRAM, TAG["member"]: S_MEMBER,
    TAG["enumerator"]: S_ENUMERATOR, TAG["subrange_type"]: S_SUBRANGE,
    TAG["formal_parameter"]: S_PARAM, TAG["unspecified_parameters"]: S_VARIADIC,
}
_WANT = {S_BASE: WANT_TYPE, S_PTR: WANT_TYPE, S_TYPEDEF: WANT_TYPE, S_QUAL: WANT_TYPE,
         S_STRUCT: WANT_AGG, S_ENUM: WANT_AGG, S_ARRAY: WANT_TYPE, S_SUBRTYPE: WANT_TYPE,
         S_UNSPEC: WANT_TYPE, S_SUBPROGRAM: WANT_SUBPROGRAM, S_MEMBER: WANT_MEMBER,
         S_ENUMERATOR: WANT_ENUMERATOR, S_SUBRANGE: WANT_SUBRANGE, S_PARAM: WANT_PARAM,
         S_VARIADIC: ()}
_QUAL_KIND = {TAG["const_type"]: M.CONST, TAG["volatile_type"]: M.VOLATILE,
              TAG["restrict_type"]: M.RESTRICT, TAG["atomic_type"]: None}
_AGG_KIND = {TAG["structure_type"]: M.STRUCT, TAG["class_type"]: M.STRUCT,
             TAG["union_type"]: M.UNION}
_AT_SIBLING = AT["sibling"]
_TAG_LEXICAL_BLOCK = TAG["lexical_block"]
# childless DIEs of these kinds are stored by one compiled call: action -> (record, extra)
_SIMPLE = {S_PTR: (R_PTR, "ptr"), S_TYPEDEF: (R_TYPEDEF, "typedef"), S_BASE: (R_BASE, "base"),
           S_QUAL: (R_QUAL, None)}
_TYPE_ACTIONS = frozenset((S_BASE, S_PTR, S_TYPEDEF, S_QUAL, S_STRUCT, S_ENUM, S_ARRAY,
                           S_SUBRTYPE, S_UNSPEC))


_FINISH = {S_MEMBER: FINISH_MEMBER, S_ENUMERATOR: FINISH_ENUMERATOR, S_PARAM: FINISH_PARAM}


class Plan:
    """How to handle DIEs of one abbreviation in one unit.  `rec`: for members,
    enumerators and parameters, a decoder appending the child's fields to a flat list."""
    __slots__ = ("action", "dec", "children", "fixed", "skip", "sib", "tag", "rec", "simple")


class Plans(list):
    """Plans indexed by abbreviation code, built on first use (a unit uses only some of its
    abbreviations the way we walk it), plus per-code record builders of the childless
    member / enumerator / parameter abbreviations (the hot loops' fast path)."""

    def __init__(self, abbrevs: dict, decoders, unit):
        top = max(abbrevs) if abbrevs else 0
        if top > 1_000_000:
            raise FormError(f"abbreviation code {top} is implausibly large")
        super().__init__([None] * (top + 1))
        self.abbrevs = abbrevs
        self.decoders = decoders
        self.sizes = (unit.addr_size, unit.off_size, unit.version)
        self.member = [None] * (top + 1)
        self.enumerator = [None] * (top + 1)
        self.param = [None] * (top + 1)
        self.fast = {S_MEMBER: self.member, S_ENUMERATOR: self.enumerator,
                     S_PARAM: self.param}
        self.simple = [None] * (top + 1)   # childless pointer/typedef/base/qualifier DIEs
        self.ctable = None                 # the C scanner's copy of the table (reader.py)

    def build(self, code: int, where: int) -> Plan:
        """The plan of `code` (compiling its decoders now); FormError if there is none."""
        p = self[code] if 0 <= code < len(self) else None
        if p is not None:
            return p
        ab = self.abbrevs.get(code)
        if ab is None:
            raise FormError(f"DIE uses abbreviation code {code}, absent from its table", where)
        shared = self.decoders.plans
        key = (ab.tag, ab.children, ab.specs, self.sizes)
        p = shared.get(key)
        if p is None:
            p = shared[key] = _make_plan(ab, self.decoders, *self.sizes)
        if p.rec is not None and not p.children:
            self.fast[p.action][code] = p.rec
        elif p.simple is not None:
            self.simple[code] = p.simple
        self[code] = p
        return p


def _make_plan(ab, decoders, asz, osz, ver) -> Plan:
    """A plan depends only on the abbreviation's shape: shared by every unit whose table
    has the same (tag, children, attributes/forms) entry (`decoders.plans`)."""
    p = Plan()
    p.tag = ab.tag
    p.action = action = _TAG_ACTION.get(ab.tag, S_SKIP)
    p.children = ab.children
    p.dec = decoders.get(ab, _WANT[action], asz, osz, ver) if action != S_SKIP else None
    p.fixed = decoders.skip_size(ab, asz, osz, ver)
    p.skip = decoders.get(ab, (), asz, osz, ver) if p.fixed is None else None
    has_sib = ab.children and any(at == _AT_SIBLING for at, _f, _i in ab.specs)
    p.sib = decoders.get(ab, WANT_SIBLING, asz, osz, ver) if has_sib else None
    p.rec = p.simple = None
    if action in _FINISH:
        p.rec = decoders.get(ab, _WANT[action], asz, osz, ver, _FINISH[action])
    elif not ab.children and action in _SIMPLE:
        extra = _QUAL_KIND[ab.tag] if action == S_QUAL else _SIMPLE[action][1]
        p.simple = decoders.get(ab, _WANT[action], asz, osz, ver,
                                finish_store(_SIMPLE[action][0], extra))
    return p


def make_plans(abbrevs: dict, decoders, unit) -> Plans:
    return Plans(abbrevs, decoders, unit)


class UnitScan:
    """Scan the children of one unit's DIE (the caller decodes the unit DIE itself):
    `records` maps virtual DIE offsets to the records described above.

    `known`: {skey: type id} of the definitions interned so far (keys.UnitInterner fills
    it); a struct/union/enum whose skey is there is jumped over via DW_AT_sibling (every
    unit repeats the definitions of the headers it includes).  `files`: the unit's
    decl_file table, a callable returning it (read only when needed)."""

    def __init__(self, d, unit, plans, known=None, files=None):
        self.d = d
        self.u = unit
        self.plans = plans
        self.space = unit.space
        self.end = unit.end
        self.records: dict = {}
        self.known = known if files is not None else None
        self._files_of = files
        self._files = None

    def skey(self, kind, name, size, dfile, dline, length):
        """The identity of a definition across units, or None when it has none.

        Only definitions in headers count: a .c file included by another with different
        macros (fs/compat_binfmt_elf.c includes fs/binfmt_elf.c) gives the same name, file
        and line another layout.  A header line has one layout per kernel build (the
        kernel's own ABI rule); the subtree's byte length is part of the identity too."""
        files = self._files
        if files is None:
            files = self._files = self._files_of()
        if dfile.__class__ is not int or not 0 <= dfile < len(files):
            return None
        f = files[dfile]
        return (kind, name, size, f, dline, length) if f and f.endswith(".h") else None

    # ---- generic -------------------------------------------------------------
    def code_at(self, o):
        d = self.d
        code = d[o]
        if code < 0x80:
            return code, o + 1
        return uleb(d, o)

    def plan(self, code, o):
        plans = self.plans
        p = plans[code] if code < len(plans) else None
        return p if p is not None else plans.build(code, o)

    def skip(self, p, o):
        """Offset after the DIE (and its subtree) whose attributes start at `o`."""
        if p.sib is not None:
            s = p.sib(self.d, o, self.u)[1] - self.space
            if o < s <= self.end:
                return s
            raise FormError(f"DW_AT_sibling 0x{s:x} outside its unit", o)
        o = o + p.fixed if p.fixed is not None else p.skip(self.d, o, self.u)[0]
        if p.children:
            o = self.skip_children(o)
        return o

    def skip_children(self, o):
        d = self.d
        plans = self.plans
        end = self.end
        while True:
            if o >= end:
                raise FormError("DIE children run past the end of their unit", o)
            code = d[o]
            if code < 0x80:
                o += 1
            else:
                code, o = uleb(d, o)
            if code == 0:
                return o
            p = plans[code] if code < len(plans) else None
            if p is None:
                p = plans.build(code, o)
            o = self.skip(p, o)

    # ---- unit level ------------------------------------------------------------
    def top(self, o):
        """The children of the unit DIE; returns the offset after them."""
        d, u = self.d, self.u
        plans = self.plans
        simple = plans.simple
        n = len(plans)
        records = self.records
        space = self.space
        end = self.end
        handlers = self.handlers
        while True:
            if o >= end:
                if o == end:        # some producers omit the unit's final null entry
                    return o
                raise FormError("DIE tree runs past the end of its unit", o)
            off = o
            code = d[o]
            if code < 0x80:
                o += 1
            else:
                code, o = uleb(d, o)
            if code == 0:
                return o
            f = simple[code] if code < n else None
            if f is not None:
                o = f(d, o, u, records, off + space)
                continue
            p = plans[code] if code < n else None
            if p is None:
                p = plans.build(code, off)
            a = p.action
            if a == S_SKIP:
                o = self.skip(p, o)
            else:
                o = handlers[a](self, p, o, off + self.space)

    # ---- handlers: (self, plan, attribute offset, virtual DIE offset) -> next offset ------
    # (childless pointer/typedef/base/qualifier DIEs normally take the one-call path in
    # top(); these handle the rare ones with children)
    def _base(self, p, o, off):
        o, name, size, typ, decl, enc, sib, sig, vec = p.dec(self.d, o, self.u)
        self.records[off] = (R_BASE, name, size, enc)
        return self._after(p, o)

    def _ptr(self, p, o, off):
        o, name, size, typ, decl, enc, sib, sig, vec = p.dec(self.d, o, self.u)
        self.records[off] = (R_PTR, typ, size)
        return self._after(p, o)

    def _qual(self, p, o, off):
        o, name, size, typ, decl, enc, sib, sig, vec = p.dec(self.d, o, self.u)
        self.records[off] = (R_QUAL, _QUAL_KIND[p.tag], typ)
        return self._after(p, o)

    def _typedef(self, p, o, off):
        o, name, size, typ, decl, enc, sib, sig, vec = p.dec(self.d, o, self.u)
        self.records[off] = (R_TYPEDEF, name, typ)
        return self._after(p, o)

    def _unspec(self, p, o, off):
        o, name, size, typ, decl, enc, sib, sig, vec = p.dec(self.d, o, self.u)
        self.records[off] = (R_UNSPEC, name)
        return self._after(p, o)

    def _after(self, p, o):
        return self.skip_children(o) if p.children else o

    def _body(self, o, fast, action, what):
        """Children of a struct/union/enum: DIEs of kind `action` (member / enumerator)
        append their fields to a flat list (childless ones through the compiled `fast`
        builders); nested types are recorded; anything else is skipped.
        Returns (next offset, flat list)."""
        d, u = self.d, self.u
        plans = self.plans
        n = len(plans)
        end = self.end
        out = []
        while True:
            if o >= end:
                raise FormError(f"{what} run past the end of their unit", o)
            doff = o
            code = d[o]
            if code < 0x80:
                o += 1
            else:
                code, o = uleb(d, o)
            if code == 0:
                return o, out
            f = fast[code] if code < n else None
            if f is not None:
                o = f(d, o, u, out)
                continue
            q = plans[code] if code < n else None
            if q is None:
                q = plans.build(code, doff)
            if q.action == action:
                o = q.rec(d, o, u, out)
                if q.children:
                    o = self.skip_children(o)
            elif q.action in _TYPE_ACTIONS:
                o = self.handlers[q.action](self, q, o, doff + self.space)
            else:
                o = self.skip(q, o)

    def _struct(self, p, o, off):
        o, name, size, typ, decl, enc, sib, sig, vec, dfile, dline = p.dec(self.d, o, self.u)
        kind = _AGG_KIND[p.tag]
        skey = None
        if self.known is not None and name is not None and dfile is not None and not decl \
                and sig is None:
            after = sib - self.space if sib is not None else -1
            if o < after <= self.end:
                skey = self.skey(kind, name, size, dfile, dline, after - o)
                tid = self.known.get(skey) if skey is not None else None
                if tid is not None:           # seen in an earlier unit: jump over it
                    self.records[off] = (R_KNOWN, tid, kind, name, size)
                    return after
        members = []
        if p.children:
            before = len(self.records)
            o, members = self._body(o, self.plans.member, S_MEMBER, "struct members")
            if len(self.records) != before:
                skey = None            # nested type DIEs: other DIEs may refer to them
        if sig is not None:
            self.records[off] = (R_ALIAS, sig)
        else:
            self.records[off] = (R_STRUCT, kind, name, size, bool(decl), members, skey)
        return o

    def _enum(self, p, o, off):
        o, name, size, typ, decl, enc, sib, sig, vec, dfile, dline = p.dec(self.d, o, self.u)
        skey = None
        if self.known is not None and name is not None and dfile is not None and not decl \
                and sig is None:
            after = sib - self.space if sib is not None else -1
            if o < after <= self.end:
                skey = self.skey(M.ENUM, name, size, dfile, dline, after - o)
                tid = self.known.get(skey) if skey is not None else None
                if tid is not None:           # seen in an earlier unit: jump over it
                    self.records[off] = (R_KNOWN, tid, M.ENUM, name, size)
                    return after
        values = []
        if p.children:
            o, values = self._body(o, self.plans.enumerator, S_ENUMERATOR,
                                   "enumerators")
        if sig is not None:
            self.records[off] = (R_ALIAS, sig)
        else:
            self.records[off] = (R_ENUM, name, size, bool(decl), values, typ, skey)
        return o

    def _array(self, p, o, off):
        d, u = self.d, self.u
        o, name, size, typ, decl, enc, sib, sig, vec = p.dec(d, o, u)
        dims = []
        if p.children:
            while True:
                if o >= self.end:
                    raise FormError("array subranges run past the end of their unit", o)
                code, o = self.code_at(o)
                if code == 0:
                    break
                q = self.plan(code, o)
                if q.action == S_SUBRANGE:
                    o, ub, count, lb = q.dec(d, o, u)
                    if count.__class__ is int:
                        n = count
                    elif ub.__class__ is int:
                        if ub >= 1 << 63:
                            ub -= 1 << 64
                        elif ub == 0xFFFFFFFF:
                            ub = -1
                        n = ub - (lb if lb.__class__ is int else 0) + 1
                    else:
                        n = 0
                    dims.append(n if n > 0 else 0)
                    if q.children:
                        o = self.skip_children(o)
                else:
                    o = self.skip(q, o)
        if not dims:
            dims.append(0)
        self.records[off] = (R_ARRAY, typ, dims)
        return o

    def _params(self, p, o, body):
        """Direct formal parameters of a subprogram / subroutine type.  Returns
        (offset after the DIE, flat [name, type, abstract_origin, ...], variadic).
        With `body`, the rest of a function's children go to `_fbody` (types declared
        inside functions are types too: BTF and `pahole --show_private_classes` list them)."""
        d, u = self.d, self.u
        plans = self.plans
        fast = plans.param
        n = len(plans)
        end = self.end
        out = []
        variadic = False
        while True:
            if o >= end:
                raise FormError("parameters run past the end of their unit", o)
            doff = o
            code = d[o]
            if code < 0x80:
                o += 1
            else:
                code, o = uleb(d, o)
            if code == 0:
                break
            f = fast[code] if code < n else None
            if f is not None:
                o = f(d, o, u, out)
                continue
            q = self.plan(code, o)
            a = q.action
            if a == S_PARAM:
                o = q.rec(d, o, u, out)
                if q.children:
                    o = self.skip_children(o)
            elif a == S_VARIADIC:
                variadic = True
                o = self.skip(q, o)
            elif body:
                return self._fbody(doff), out, variadic
            else:
                o = self.skip(q, o)
        return o, out, variadic

    def _fbody(self, o):
        """The children of a function or lexical block after its parameters: record the
        types declared there, descend into lexical blocks, jump over everything else
        (variables, call sites, inlined subroutines, labels) with DW_AT_sibling."""
        d = self.d
        plans = self.plans
        n = len(plans)
        end = self.end
        handlers = self.handlers
        while True:
            if o >= end:
                raise FormError("function body runs past the end of its unit", o)
            doff = o
            code = d[o]
            if code < 0x80:
                o += 1
            else:
                code, o = uleb(d, o)
            if code == 0:
                return o
            q = plans[code] if code < n else None
            if q is None:
                q = plans.build(code, doff)
            a = q.action
            if a == S_SKIP:
                if q.tag == _TAG_LEXICAL_BLOCK and q.children:
                    o = o + q.fixed if q.fixed is not None else q.skip(d, o, self.u)[0]
                    o = self._fbody(o)
                else:
                    o = self.skip(q, o)
            elif a in _TYPE_ACTIONS:
                o = handlers[a](self, q, o, doff + self.space)
            else:
                o = self.skip(q, o)

    def _subrtype(self, p, o, off):
        o, name, size, typ, decl, enc, sib, sig, vec = p.dec(self.d, o, self.u)
        params, variadic = [], False
        if p.children:
            o, params, variadic = self._params(p, o, False)
        self.records[off] = (R_PROTO, typ, params, variadic)
        return o

    def _subprogram(self, p, o, off):
        (o, name, typ, ext, decl, dfile, dline, low_pc, ranges, inline, origin, spec, sib,
         entry) = p.dec(self.d, o, self.u)
        params, variadic = [], False
        if p.children:
            o, params, variadic = self._params(p, o, True)
        # 2: has machine code; 1: a definition without code of its own (e.g. folded into
        # an identical function, reachable through an alias symbol); 0: abstract inline
        has_code = 2 if (low_pc is not None or ranges is not None or entry is not None) \
            else 0 if inline is not None else 1
        self.records[off] = (R_SUB, name, typ, bool(ext), bool(decl), dfile, dline, has_code,
                             origin if origin is not None else spec, params, variadic)
        return o

    def _other(self, p, o, off):
        return self.skip(p, o)

    # indexed by action; members/enumerators/... outside their parent are skipped
    handlers = [_other] * 16
    for _a, _h in ((S_BASE, _base), (S_PTR, _ptr), (S_QUAL, _qual), (S_TYPEDEF, _typedef),
                   (S_UNSPEC, _unspec), (S_STRUCT, _struct), (S_ENUM, _enum),
                   (S_ARRAY, _array), (S_SUBRTYPE, _subrtype), (S_SUBPROGRAM, _subprogram)):
        handlers[_a] = _h
    del _a, _h
