"""Raw BTF (/sys/kernel/btf/vmlinux, *.btf, an ELF's .BTF section) -> TypeGraph.

Layout (include/uapi/linux/btf.h): a 24-byte header, then a type section of variable-length
records, then a string section.  Type ids start at 1 in record order (0 is void).
Every kind current kernels emit is understood.  FUNC records become `model.Function`s, VAR,
DATASEC and DECL_TAG records the graph's `variables`, `datasecs` and `decl_tags`, so what is
read can be written back out whole (dbhive.btf.writer).  `read_btf_ids` also says which
model object each BTF type id became (CO-RE relocations name BTF ids).

Split BTF (a module's `.BTF`, /sys/kernel/btf/<module>) continues a base BTF (the kernel's):
its type ids start after the base's last id and its string offsets after the base's string
section, so ids and offsets below those name the base's types and strings.  Read the base
once with `read_btf_base`, then each split with `read_btf(data, source, base=that)`: the
graph holds the base's types (the same objects, ids as in `base.graph`) followed by the
split's own, and only the split's functions (a split's DATASEC/DECL_TAG entries that name
the base's functions or variables are not kept).
"""
from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass
from typing import Callable, Optional

from .. import model as M
from ..errors import BtfError
from . import kinds as K
from .kinds import (ARRAY as K_ARRAY, CONST as K_CONST, DATASEC as K_DATASEC,
                    DECL_TAG as K_DECL_TAG, ENUM as K_ENUM, ENUM64 as K_ENUM64, FLOAT as K_FLOAT,
                    FUNC as K_FUNC, FUNC_PROTO as K_FUNC_PROTO, FUNC_STATIC, FWD as K_FWD,
                    INT as K_INT, INT_BOOL, INT_CHAR, INT_SIGNED, PTR as K_PTR,
                    RESTRICT as K_RESTRICT, STRUCT as K_STRUCT, TYPE_TAG as K_TYPE_TAG,
                    TYPEDEF as K_TYPEDEF, UNION as K_UNION, VAR as K_VAR,
                    VOLATILE as K_VOLATILE)

# bytes after the 12-byte common header: fixed per kind, and per vlen entry
_FIXED_EXTRA = {K_INT: 4, K_ARRAY: K.ARRAY_SIZE, K_VAR: 4, K_DECL_TAG: 4}
_PER_VLEN = {K_STRUCT: K.MEMBER_SIZE, K_UNION: K.MEMBER_SIZE, K_ENUM: K.ENUM_SIZE,
             K_ENUM64: K.ENUM64_SIZE, K_FUNC_PROTO: K.PARAM_SIZE, K_DATASEC: K.VARSECINFO_SIZE}

_SIMPLE_REF = {K_PTR: M.PTR, K_TYPEDEF: M.TYPEDEF, K_VOLATILE: M.VOLATILE, K_CONST: M.CONST,
               K_RESTRICT: M.RESTRICT, K_TYPE_TAG: M.TYPE_TAG}


_LINKAGE = {0: "static", 1: "global", 2: "extern"}

# the C parser (btf/_cbtf.c), or None where it was not built
try:
    from . import _cbtf as _c
except ImportError:
    _c = None
else:
    _c.configure(M.Type, M.Member, M.Param, M.Function, M.Variable, M.DataSec, M.DeclTag,
                 {K_INT: M.INT, K_FLOAT: M.FLOAT, K_ARRAY: M.ARRAY, K_STRUCT: M.STRUCT,
                  K_UNION: M.UNION, K_ENUM: M.ENUM, K_ENUM64: M.ENUM, K_FWD: M.FWD,
                  K_FUNC_PROTO: M.FUNC_PROTO, **_SIMPLE_REF},
                 # the strings the model's objects hold; "vm": a new Function's module
                 {w: w for w in ("bool", "char", "signed", "unsigned", "struct", "union",
                                 *_LINKAGE.values(), *M.TARGET_KINDS)} |
                 {"vm": M.Function("", 0).module})

# Raw BTF larger than this is refused (a kernel's is 5-10 MB; with every module, tens).
MAX_BTF_BYTES = 256 << 20


def btf_extent(head: bytes, source: str) -> int:
    """How many bytes the BTF whose first 24 bytes are `head` declares (header + type and
    string sections); BtfError if `head` is no BTF header."""
    if len(head) < K.HEADER_SIZE:
        raise BtfError(f"{source}: too short for a BTF header ({len(head)} bytes)")
    if struct.unpack_from("<H", head, 0)[0] == K.MAGIC:
        bo = "<"
    elif struct.unpack_from(">H", head, 0)[0] == K.MAGIC:
        bo = ">"
    else:
        raise BtfError(f"{source}: not BTF (magic 0x{struct.unpack_from('<H', head)[0]:04x}, "
                       f"expected 0xeb9f)")
    _v, _f, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        bo + "BBIIIII", head, 2)
    return hdr_len + max(type_off + type_len, str_off + str_len)


def read_btf_file(path: str, max_bytes: int = MAX_BTF_BYTES) -> bytes:
    """The bytes of a raw BTF file, as many as its header declares (padding after them is
    not read); BtfError if it declares more than `max_bytes`."""
    from ..elf import open_regular
    with open_regular(path, "BTF file") as fh:
        head = fh.read(K.HEADER_SIZE)
        n = btf_extent(head, path)
        if n > max_bytes:
            raise BtfError(f"{path}: declares {n} bytes of BTF, more than the limit of "
                           f"{max_bytes} (raise it with --max-btf-bytes)")
        return head + fh.read(max(0, n - len(head)))


@dataclass
class BtfBase:
    """A parsed base BTF that split BTF continues (see the module docstring)."""
    graph: M.TypeGraph
    model_id: list             # BTF id -> model id (0 for records that are not types)
    int_bits: dict             # BTF id of a partial INT -> (bit offset, bits)
    string: Callable           # string offset -> text
    str_len: int
    source: str
    type_map: dict             # BTF id -> model id, of the types only (and 0 -> 0)

    @property
    def type_count(self) -> int:
        """The first BTF id of a split BTF on this base."""
        return len(self.model_id)


def read_btf_base(data: bytes, source: str = "BTF") -> BtfBase:
    """Parse a base BTF (a kernel's) for reading split BTF on top of it."""
    with M.gc_paused():
        parser = _parser(data, source, None)
        graph = parser.parse()
    return BtfBase(graph, parser.model_id, parser.int_bits, parser.string,
                   parser.strs_end - parser.strs_start, source, parser.type_map)


def read_btf(data: bytes, source: str = "BTF", base: Optional[BtfBase] = None) -> M.TypeGraph:
    """Parse raw BTF bytes.  `source` names the input in error messages; `base`: the base
    BTF `data` is a split BTF of (ids and string offsets continue the base's)."""
    with M.gc_paused():
        layout = _layout(data, source)
        if base is None and c_enabled():
            g = _c_parse(data, layout)
            if g is not None:
                return g
        return _Parser(data, *layout, source, base).parse()


def c_enabled() -> bool:
    """Whether the C parser (btf/_cbtf.c) reads a base BTF: built, and not turned off by
    DBHIVE_BTF_PURE=1 (the Python parser, the reference, gives the same graph)."""
    return _c is not None and os.environ.get("DBHIVE_BTF_PURE", "") in ("", "0")


def _c_parse(data: bytes, layout: tuple) -> Optional[M.TypeGraph]:
    """The graph the Python parser makes of a base BTF, made by the C parser; None when
    the C parser refuses the input (the Python parser then says why)."""
    bo, types_start, types_end, strs_start, strs_end = layout
    g = M.TypeGraph(source="btf")
    got = _c.parse(data, bo == ">", types_start, types_end, strs_start, strs_end, g.types)
    if got is None:
        return None
    g.functions, g.variables, g.datasecs, g.decl_tags = got
    return g


def read_btf_ids(data: bytes, source: str = "BTF") -> tuple:
    """(graph, ids): `ids[btf_id]` is ('type', model type id), ('func', index into
    graph.functions), ('var', ...), ('datasec', ...) or ('decl_tag', ...); ids[0] is void."""
    with M.gc_paused():
        p = _parser(data, source, None)
        g = p.parse()
    return g, p.btf_ids


def _parser(data: bytes, source: str, base: Optional[BtfBase]) -> "_Parser":
    return _Parser(data, *_layout(data, source), source, base)


def _layout(data: bytes, source: str) -> tuple:
    """(byte order, types start, types end, strings start, strings end) from the header."""
    if len(data) < K.HEADER_SIZE:
        raise BtfError(f"{source}: too short for a BTF header ({len(data)} bytes)")
    magic_le = struct.unpack_from("<H", data, 0)[0]
    if magic_le == K.MAGIC:
        bo = "<"
    elif struct.unpack_from(">H", data, 0)[0] == K.MAGIC:
        bo = ">"
    else:
        raise BtfError(f"{source}: not BTF (magic 0x{magic_le:04x}, expected 0xeb9f)")
    version, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
        bo + "BBIIIII", data, 2)
    if version != K.VERSION:
        raise BtfError(f"{source}: unsupported BTF version {version}")
    types_start = hdr_len + type_off
    types_end = types_start + type_len
    strs_start = hdr_len + str_off
    strs_end = strs_start + str_len
    if hdr_len < K.HEADER_SIZE or types_end > len(data) or strs_end > len(data):
        raise BtfError(f"{source}: truncated (header says {max(types_end, strs_end)} bytes, "
                       f"file has {len(data)})")
    return bo, types_start, types_end, strs_start, strs_end


class _Strings(dict):
    """String offset -> text (offset 0: None).  Every string that starts right after a NUL
    is put in at once (one split of the section, not a find() per name); an offset into the
    middle of a string (legal, rare) is looked up when first asked for (`__missing__`), so
    `strings[off]` serves comprehensions too.  A split BTF's offsets continue its base's:
    those below the base's string section are the base's."""

    def __init__(self, data: bytes, start: int, end: int, source: str,
                 base: Optional[BtfBase]):
        self.data, self.start, self.end, self.source, self.base = data, start, end, source, base
        self.str_base = base.str_len if base else 0
        section = data[start:end]
        raw = section.split(b"\0")
        if section.isascii():
            parts = section.decode("ascii").split("\0")
        else:
            parts = [r.decode("utf-8", "replace") for r in raw]
        # each string starts one byte (its NUL) after the one before it ends
        offsets = itertools.accumulate(map((1).__add__, map(len, raw)), initial=self.str_base)
        super().__init__(zip(offsets, parts))
        if not raw[-1]:                 # just past the last NUL: outside the section
            del self[self.str_base + len(section)]
        self[0] = None

    def __missing__(self, off: int) -> str:
        if off < self.str_base:
            s = self.base.string(off)
        else:
            start = self.start + off - self.str_base
            nul = self.data.find(b"\0", start, self.end)
            if start >= self.end or nul < 0:
                raise BtfError(f"{self.source}: string offset {off} outside the string "
                               f"section")
            s = self.data[start:nul].decode("utf-8", "replace")
        self[off] = s
        return s


class _Parser:
    def __init__(self, data, bo, types_start, types_end, strs_start, strs_end, source,
                 base: Optional[BtfBase] = None):
        self.base = base
        self.data = data
        self.bo = bo
        self.pos = types_start
        self.end = types_end
        self.strs_start = strs_start
        self.strs_end = strs_end
        self.source = source
        self.strings = _Strings(data, strs_start, strs_end, source, base)

    def string(self, off: int) -> Optional[str]:
        return self.strings[off]

    def fail(self, what: str, btf_id: int, pos: int):
        raise BtfError(f"{self.source}: {what} (type id {btf_id} at byte {pos})")

    def parse(self) -> M.TypeGraph:
        data, bo, end = self.data, self.bo, self.end
        hdr = struct.Struct(bo + "III").unpack_from
        u32 = struct.Struct(bo + "I").unpack_from
        arr = struct.Struct(bo + "III")
        arr_iter = arr.iter_unpack
        pair_iter = struct.Struct(bo + "II").iter_unpack
        enum32_iter = struct.Struct(bo + "Ii").iter_unpack
        enum32u_iter = struct.Struct(bo + "II").iter_unpack
        enum64_iter = struct.Struct(bo + "III").iter_unpack
        strings = self.strings
        Type, Member, Param, Function = M.Type, M.Member, M.Param, M.Function
        KIND_SHIFT, KIND_MASK, VLEN_MASK, KFLAG_SHIFT = (K.KIND_SHIFT, K.KIND_MASK, K.VLEN_MASK,
                                                         K.KFLAG_SHIFT)
        BF_SHIFT, OFF_MASK = K.MEMBER_BITFIELD_SHIFT, K.MEMBER_OFFSET_MASK
        fixed_extra, per_vlen = _FIXED_EXTRA.get, _PER_VLEN.get

        # First pass builds records with BTF ids; model ids are assigned after, because
        # VAR/DATASEC/DECL_TAG/FUNC records are not types in the model.

        # btf id -> Type, Function, ("var"|"datasec"|"decl_tag", ...) or None; a split
        # BTF's ids start after its base's (whose records are the base graph's, not
        # repeated here)
        records: list = [None] * (self.base.type_count if self.base else 1)
        add = records.append
        int_bits: dict = dict(self.base.int_bits) if self.base else {}
        pos = self.pos
        while pos < end:
            if pos + 12 > end:
                self.fail("truncated type record", len(records), pos)
            name_off, info, size_type = hdr(data, pos)
            rec_pos = pos
            pos += 12
            kind = (info >> KIND_SHIFT) & KIND_MASK
            vlen = info & VLEN_MASK
            kflag = info >> KFLAG_SHIFT
            name = strings[name_off]
            extra = fixed_extra(kind, 0) + per_vlen(kind, 0) * vlen
            if pos + extra > end:
                self.fail(f"record of kind {kind} with {vlen} entries runs past the type "
                          f"section", len(records), rec_pos)
            # the kinds in the order of how many a kernel has of each
            if kind == K_FUNC:
                # its prototype is still a BTF id here (see _to_graph)
                add(Function(name, size_type, vlen == FUNC_STATIC))
                if vlen not in _LINKAGE:
                    self.fail(f"FUNC with unknown linkage {vlen}", len(records) - 1, rec_pos)
            elif kind in _SIMPLE_REF:
                add(Type(_SIMPLE_REF[kind], name, None, size_type))
            elif kind == K_FUNC_PROTO:
                pairs = list(pair_iter(data[pos:pos + extra]))
                if (0, 0) in pairs:
                    add(Type(M.FUNC_PROTO, None, ref=size_type, variadic=True,
                             params=[Param(strings[n], t) for n, t in pairs if n or t]))
                else:
                    add(Type(M.FUNC_PROTO, None, ref=size_type,
                             params=[Param(strings[n], t) for n, t in pairs]))
            elif kind == K_STRUCT or kind == K_UNION:
                entries = arr_iter(data[pos:pos + extra])
                if kflag:
                    members = [Member(strings[n], t, off & OFF_MASK, off >> BF_SHIFT)
                               for n, t, off in entries]
                else:
                    members = [Member(strings[n], t, off, 0) for n, t, off in entries]
                add(Type(M.STRUCT if kind == K_STRUCT else M.UNION, name, size_type, None,
                         members))
            elif kind == K_INT:
                (enc,) = u32(data, pos)
                encoding = (enc >> K.INT_ENCODING_SHIFT) & 0xF
                signed = bool(encoding & INT_SIGNED)
                # without kind_flag a bitfield's width/extra offset live in its INT type
                bits, bit_off = enc & 0xFF, (enc >> K.INT_OFFSET_SHIFT) & 0xFF
                if bits != size_type * 8 or bit_off:
                    int_bits[len(records)] = (bit_off, bits)
                add(Type(M.INT, name, size_type, signed=signed,
                         encoding="bool" if encoding & INT_BOOL else
                         "char" if encoding & INT_CHAR else
                         "signed" if signed else "unsigned"))
            elif kind == K_ARRAY:
                elem, _index, nelems = arr.unpack_from(data, pos)
                add(Type(M.ARRAY, None, ref=elem, nelems=nelems))
            elif kind == K_ENUM:
                it = (enum32_iter if kflag else enum32u_iter)(data[pos:pos + extra])
                add(Type(M.ENUM, name, size_type, enumerators=[(strings[n], v) for n, v in it],
                         signed=bool(kflag)))
            elif kind == K_ENUM64:
                vals = []
                for n, lo, hi in enum64_iter(data[pos:pos + extra]):
                    v = (hi << 32) | lo
                    if kflag and v >= 1 << 63:
                        v -= 1 << 64
                    vals.append((strings[n], v))
                add(Type(M.ENUM, name, size_type, enumerators=vals, signed=bool(kflag)))
            elif kind == K_FWD:
                add(Type(M.FWD, name, encoding="union" if kflag else "struct"))
            elif kind == K_VAR:
                (linkage,) = u32(data, pos)
                add(("var", name, size_type, _LINKAGE.get(linkage)))
                if linkage not in _LINKAGE:
                    self.fail(f"VAR with unknown linkage {linkage}", len(records) - 1, rec_pos)
            elif kind == K_DATASEC:
                add(("datasec", name, size_type, list(arr_iter(data[pos:pos + extra]))))
            elif kind == K_FLOAT:
                add(Type(M.FLOAT, name, size_type))
            elif kind == K_DECL_TAG:
                (component,) = struct.unpack_from(bo + "i", data, pos)
                add(("decl_tag", name, size_type, component))
            else:
                self.fail(f"unknown BTF kind {kind}", len(records), rec_pos)
            pos += extra
        g = self._to_graph(records, int_bits)
        # a split BTF: only its own types are new (the base was checked when read)
        M.check_references(g, self.source, len(self.base.graph.types) if self.base else 0)
        return g

    def _to_graph(self, records: list, int_bits: dict) -> M.TypeGraph:
        g = M.TypeGraph(source="btf")
        n = len(records)
        base = self.base
        first = 1
        model_id = [0] * n
        ids: list = [("type", 0)] * n        # btf id -> (what it became, index)
        type_map: dict = {0: 0}             # btf id -> model id, of the types only
        if base is not None:
            g.types = list(base.graph.types)
            g.ptr_size = base.graph.ptr_size
            first = base.type_count
            model_id[:first] = base.model_id
            type_map = dict(base.type_map)
            # the base's functions/vars are not in this graph
            ids[1:first] = [("type", m) if m else ("base", 0) for m in base.model_id[1:]]
        counts = {"var": 0, "datasec": 0, "decl_tag": 0}
        Type, Function = M.Type, M.Function
        add = g.types.append
        functions = g.functions
        for btf_id in range(first, n):
            r = records[btf_id]
            if type(r) is Type:
                model_id[btf_id] = type_map[btf_id] = len(g.types)
                add(r)
                ids[btf_id] = ("type", model_id[btf_id])
            elif type(r) is Function:
                ids[btf_id] = ("func", len(functions))
                functions.append(r)
            else:
                ids[btf_id] = (r[0], counts[r[0]])
                counts[r[0]] += 1
        self.btf_ids = ids
        self.model_id, self.int_bits, self.type_map = model_id, int_bits, type_map

        def remap(ref: int, btf_id: int) -> int:
            m = type_map.get(ref)
            if m is None:
                self.fail(f"reference to type id {ref}, which is not a type", btf_id, 0)
            return m

        def target(ref: int, btf_id: int, allowed: tuple) -> Optional[tuple]:
            if 0 < ref < n and ids[ref][0] == "base":
                return None
            if not 0 < ref < n or ids[ref][0] not in allowed:
                self.fail(f"reference to id {ref}, which is not a {' or '.join(allowed)}",
                          btf_id, 0)
            return ids[ref]

        get = type_map.get
        for btf_id in range(first, n):
            r = records[btf_id]
            if type(r) is Function:
                m = get(r.proto)
                r.proto = m if m is not None else remap(r.proto, btf_id)
                continue
            if type(r) is not Type:
                what = r[0]
                if what == "var":
                    _, name, vtype, linkage = r
                    g.variables.append(M.Variable(name, remap(vtype, btf_id), linkage))
                elif what == "datasec":
                    _, name, size, entries = r
                    kept = ((target(t, btf_id, ("var", "func")), off, sz)
                            for t, off, sz in entries)
                    g.datasecs.append(M.DataSec(name, size, [
                        where + (off, sz) for where, off, sz in kept if where is not None]))
                else:
                    _, value, ref, component = r
                    where = target(ref, btf_id, ("type", "func", "var"))
                    if where is not None:
                        g.decl_tags.append(M.DeclTag(value, where[0], where[1], component))
                continue
            ref = r.ref
            if ref is not None:
                m = get(ref)
                r.ref = m if m is not None else remap(ref, btf_id)
            members = r.members
            if members:
                if int_bits:
                    for m in members:
                        if not m.bit_size and m.type in int_bits:
                            extra_off, m.bit_size = int_bits[m.type]
                            m.bit_offset += extra_off
                for m in members:
                    t = get(m.type)
                    m.type = t if t is not None else remap(m.type, btf_id)
            elif r.params:
                for p in r.params:
                    t = get(p.type)
                    p.type = t if t is not None else remap(p.type, btf_id)
        return g
