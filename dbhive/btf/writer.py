"""TypeGraph -> raw BTF bytes: a 24-byte header, the type section, the string section
(include/uapi/linux/btf.h), in the byte order of the target.

    data = encode(graph, features=profiles.CURRENT, byteorder="little")

`encode` writes the graph as it is (dedup.py and profiles.fit run before it, see emit.py);
`features` only decides how things are spelled where BTF has two ways (bitfields with or
without kind_flag, function linkage, enum signedness).  Type ids keep the model's order:
model type i is BTF type i (0 is void); functions, variables, data sections and decl tags
follow the types, in that order.

Every record is made of 32-bit words, so the sections are built as one array of words and
byte-swapped once for a big-endian target.
"""
from __future__ import annotations

import struct
import sys
from array import array
from typing import Optional

from .. import model as M
from ..errors import OutputError
from . import kinds as K

_LINKAGE = {"static": K.FUNC_STATIC, "global": K.FUNC_GLOBAL, "extern": K.FUNC_EXTERN}
_QUAL = {M.CONST: K.CONST, M.VOLATILE: K.VOLATILE, M.RESTRICT: K.RESTRICT}
_U32 = 0xFFFFFFFF
MAX_VLEN = K.VLEN_MASK
MAX_TYPES = 1 << 20           # the kernel's BTF_MAX_TYPE


class _Strings:
    """The string section: offset 0 is the empty string; each string is stored once."""

    def __init__(self):
        self.parts = [b"\0"]
        self.size = 1
        self.offsets = {"": 0}

    def add(self, s: Optional[str]) -> int:
        if not s:
            return 0
        off = self.offsets.get(s)
        if off is None:
            raw = s.encode("utf-8") + b"\0"
            off = self.offsets[s] = self.size
            self.parts.append(raw)
            self.size += len(raw)
        return off

    def data(self) -> bytes:
        return b"".join(self.parts)


def _fail(what: str, tid: int, t: M.Type):
    name = f" {t.name}" if t.name else ""
    raise OutputError(f"type id {tid} ({t.kind}{name}) cannot be written as BTF: {what}")


def encode(g: M.TypeGraph, features=None, byteorder: str = "little") -> bytes:
    """The raw BTF of `g`.  OutputError for a graph BTF cannot express (more than 65535
    members, a kind_flag bitfield beyond bit 2^24, more than 2^20 types)."""
    from .profiles import CURRENT
    f = features or CURRENT
    if byteorder not in ("little", "big"):
        raise ValueError(byteorder)
    types = g.types
    n = len(types)
    strs = _Strings()
    words = array("I")
    w = words.append
    ext = words.extend
    # BTF ids: model types first (0 = void), then synthesized INTs (index type, old-style
    # bitfields), then functions, variables, data sections, decl tags.
    extra: list = []                       # synthesized INT records: (name, size, enc, bits)
    extra_ids: dict = {}

    def int_type(name: str, size: int, enc: int, bits: int) -> int:
        key = (name, size, enc, bits)
        i = extra_ids.get(key)
        if i is None:
            i = extra_ids[key] = n + len(extra)
            extra.append(key)
        return i

    index_type = _index_type(g, int_type)
    kflag_ok = f.kind_flag
    for tid in range(1, n):
        t = types[tid]
        k = t.kind
        name = strs.add(t.name)
        if k == M.INT:
            w(name)
            w(K.info(K.INT))
            w(t.size)
            w(_int_encoding(t) << K.INT_ENCODING_SHIFT | (t.size * 8))
        elif k == M.PTR:
            ext((0, K.info(K.PTR), t.ref or 0))
        elif k in _QUAL:
            ext((0, K.info(_QUAL[k]), t.ref or 0))
        elif k == M.TYPEDEF:
            ext((name, K.info(K.TYPEDEF), t.ref or 0))
        elif k == M.TYPE_TAG:
            ext((name, K.info(K.TYPE_TAG), t.ref or 0))
        elif k == M.ARRAY:
            ext((0, K.info(K.ARRAY), 0, t.ref or 0, index_type, t.nelems or 0))
        elif k == M.STRUCT or k == M.UNION:
            members = t.members or ()
            if len(members) > MAX_VLEN:
                _fail(f"{len(members)} members (BTF allows {MAX_VLEN})", tid, t)
            kflag = kflag_ok and any(m.bit_size for m in members)
            ext((name, K.info(K.STRUCT if k == M.STRUCT else K.UNION, len(members), kflag),
                 t.size or 0))
            for m in members:
                if kflag:
                    if m.bit_offset > K.MEMBER_OFFSET_MASK or m.bit_size > 255:
                        _fail(f"member {m.name} at bit {m.bit_offset} (width {m.bit_size}) "
                              f"does not fit a kind_flag member offset", tid, t)
                    ext((strs.add(m.name), m.type,
                         m.bit_size << K.MEMBER_BITFIELD_SHIFT | m.bit_offset))
                elif m.bit_size:
                    ext((strs.add(m.name), _legacy_bitfield(g, m, int_type), m.bit_offset))
                else:
                    ext((strs.add(m.name), m.type, m.bit_offset))
        elif k == M.ENUM:
            vals = t.enumerators or ()
            if len(vals) > MAX_VLEN:
                _fail(f"{len(vals)} enumerators (BTF allows {MAX_VLEN})", tid, t)
            signed = bool(t.signed) and f.enum_signed
            size = t.size or 4
            if size > 4 and f.enum64:
                ext((name, K.info(K.ENUM64, len(vals), signed), size))
                for en, v in vals:
                    v &= (1 << 64) - 1
                    ext((strs.add(en), v & _U32, v >> 32))
            else:
                ext((name, K.info(K.ENUM, len(vals), signed), size))
                for en, v in vals:
                    ext((strs.add(en), v & _U32))
        elif k == M.FWD:
            if t.encoding == M.ENUM:        # libbpf's spelling of `enum x;`: an empty enum
                ext((name, K.info(K.ENUM, 0), 4))
            else:
                ext((name, K.info(K.FWD, 0, t.encoding == M.UNION and kflag_ok), 0))
        elif k == M.FUNC_PROTO:
            params = t.params or ()
            vlen = len(params) + bool(t.variadic)
            if vlen > MAX_VLEN:
                _fail(f"{vlen} parameters (BTF allows {MAX_VLEN})", tid, t)
            ext((0, K.info(K.FUNC_PROTO, vlen), t.ref or 0))
            for p in params:
                ext((strs.add(p.name), p.type))
            if t.variadic:
                ext((0, 0))
        elif k == M.FLOAT:
            ext((name, K.info(K.FLOAT), t.size))
        elif k == M.VOID:
            _fail("void has only id 0", tid, t)
        else:
            _fail("unknown kind", tid, t)
    for (name, size, enc, bits) in extra:
        ext((strs.add(name), K.info(K.INT), size, enc << K.INT_ENCODING_SHIFT | bits))
    func_base = n + len(extra)
    for fn in g.functions:
        linkage = K.FUNC_STATIC if fn.static or not f.func_global else K.FUNC_GLOBAL
        ext((strs.add(fn.name), K.info(K.FUNC, linkage), fn.proto))
    var_base = func_base + len(g.functions)
    for v in g.variables:
        ext((strs.add(v.name), K.info(K.VAR), v.type, _LINKAGE[v.linkage]))
    sec_base = var_base + len(g.variables)
    base = {"func": func_base, "var": var_base, "type": 0}
    for d in g.datasecs:
        ext((strs.add(d.name), K.info(K.DATASEC, len(d.entries)), d.size))
        for kind, index, off, size in d.entries:
            ext((base[kind] + index, off, size))
    tag_base = sec_base + len(g.datasecs)
    for tag in g.decl_tags:
        ext((strs.add(tag.value), K.info(K.DECL_TAG), base[tag.target_kind] + tag.target,
             tag.component & _U32))
    total = tag_base + len(g.decl_tags)
    if total > MAX_TYPES:
        raise OutputError(f"{total} BTF records, more than BTF allows ({MAX_TYPES})")
    if (sys.byteorder == "little") != (byteorder == "little"):
        words.byteswap()
    type_sec = words.tobytes()
    str_sec = strs.data()
    order = "<" if byteorder == "little" else ">"
    header = struct.pack(order + "HBBIIIII", K.MAGIC, K.VERSION, 0, K.HEADER_SIZE,
                         0, len(type_sec), len(type_sec), len(str_sec))
    return header + type_sec + str_sec


def _int_encoding(t: M.Type) -> int:
    """BTF allows one encoding bit: bool, else signed.  A character type is written as its
    signedness says, as pahole and the kernel's own BTF do (neither uses BTF_INT_CHAR)."""
    if t.encoding == "bool":
        return K.INT_BOOL
    if t.signed:
        return K.INT_SIGNED
    return 0


def _index_type(g: M.TypeGraph, int_type) -> int:
    """The INT arrays are indexed by: the graph's own `int` (pahole's and the kernel's
    choice), else a 4-byte one added for the purpose.  0 when there are no arrays."""
    has_array = False
    for tid, t in enumerate(g.types):
        if t.kind == M.INT and t.name == "int" and t.size == 4 and t.signed:
            return tid
        has_array = has_array or t.kind == M.ARRAY
    if not has_array:
        return 0
    return int_type("int", 4, K.INT_SIGNED, 32)


def _legacy_bitfield(g: M.TypeGraph, m: M.Member, int_type) -> int:
    """Before kind_flag (kernels < 5.0) a bitfield's width lives in an INT of its own."""
    tid = g.strip(m.type)
    t = g.types[tid]
    if t.kind == M.INT:
        return int_type(t.name or "int", t.size, _int_encoding(t), m.bit_size)
    if t.kind == M.ENUM:
        return int_type(f"{'int' if t.signed else 'unsigned int'}", t.size or 4,
                        K.INT_SIGNED if t.signed else 0, m.bit_size)
    size = g.sizeof(m.type) or 4
    return int_type("unsigned int", size, 0, m.bit_size)
