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

    @property
    def type_count(self) -> int:
        """The first BTF id of a split BTF on this base."""
        return len(self.model_id)


def read_btf_base(data: bytes, source: str = "BTF") -> BtfBase:
    """Parse a base BTF (a kernel's) for reading split BTF on top of it."""
    parser = _parser(data, source, None)
    graph = parser.parse()
    return BtfBase(graph, parser.model_id, parser.int_bits, parser.string,
                   parser.strs_end - parser.strs_start, source)


def read_btf(data: bytes, source: str = "BTF", base: Optional[BtfBase] = None) -> M.TypeGraph:
    """Parse raw BTF bytes.  `source` names the input in error messages; `base`: the base
    BTF `data` is a split BTF of (ids and string offsets continue the base's)."""
    return _parser(data, source, base).parse()


def read_btf_ids(data: bytes, source: str = "BTF") -> tuple:
    """(graph, ids): `ids[btf_id]` is ('type', model type id), ('func', index into
    graph.functions), ('var', ...), ('datasec', ...) or ('decl_tag', ...); ids[0] is void."""
    p = _parser(data, source, None)
    g = p.parse()
    return g, p.btf_ids


def _parser(data: bytes, source: str, base: Optional[BtfBase]) -> "_Parser":
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
    return _Parser(data, bo, types_start, types_end, strs_start, strs_end, source, base)


class _Parser:
    def __init__(self, data, bo, types_start, types_end, strs_start, strs_end, source,
                 base: Optional[BtfBase] = None):
        self.base = base
        self.str_base = base.str_len if base else 0
        self.data = data
        self.bo = bo
        self.pos = types_start
        self.end = types_end
        self.strs_start = strs_start
        self.strs_end = strs_end
        self.source = source
        # every string that starts right after a NUL, keyed by its offset: one pass over the
        # section instead of a find() per name (offsets into the middle of a string, legal
        # but rare, take the slow path below)
        section = data[strs_start:strs_end]
        self._str_cache: dict = {}
        off = 0
        for raw in section.split(b"\0"):
            if raw:
                self._str_cache[off] = raw.decode("utf-8", "replace")
            off += len(raw) + 1

    def string(self, off: int) -> Optional[str]:
        if off == 0:
            return None
        if self.str_base:
            if off < self.str_base:
                return self.base.string(off)
            off -= self.str_base
        s = self._str_cache.get(off)
        if s is None:
            start = self.strs_start + off
            end = self.data.find(b"\0", start, self.strs_end)
            if start >= self.strs_end or end < 0:
                raise BtfError(f"{self.source}: string offset {off + self.str_base} outside "
                               f"the string section")
            s = self.data[start:end].decode("utf-8", "replace")
            self._str_cache[off] = s
        return s

    def fail(self, what: str, btf_id: int, pos: int):
        raise BtfError(f"{self.source}: {what} (type id {btf_id} at byte {pos})")

    def parse(self) -> M.TypeGraph:
        data, bo, end = self.data, self.bo, self.end
        hdr = struct.Struct(bo + "III")
        u32 = struct.Struct(bo + "I")
        arr = struct.Struct(bo + "III")
        pair = struct.Struct(bo + "II")
        enum32 = struct.Struct(bo + "Ii")
        enum32u = struct.Struct(bo + "II")
        enum64 = struct.Struct(bo + "III")
        string = self.string
        KIND_SHIFT, KIND_MASK, VLEN_MASK, KFLAG_SHIFT = (K.KIND_SHIFT, K.KIND_MASK, K.VLEN_MASK,
                                                         K.KFLAG_SHIFT)
        BF_SHIFT, OFF_MASK = K.MEMBER_BITFIELD_SHIFT, K.MEMBER_OFFSET_MASK

        # First pass builds records with BTF ids; model ids are assigned after, because
        # VAR/DATASEC/DECL_TAG/FUNC records are not types in the model.

        # btf id -> Type or ("func", name, proto, static) or None; a split BTF's ids start
        # after its base's (whose records are the base graph's, not repeated here)
        records: list = [None] * (self.base.type_count if self.base else 1)
        int_bits: dict = dict(self.base.int_bits) if self.base else {}
        pos = self.pos
        while pos < end:
            btf_id = len(records)
            if pos + 12 > end:
                self.fail("truncated type record", btf_id, pos)
            name_off, info, size_type = hdr.unpack_from(data, pos)
            rec_pos = pos
            pos += 12
            kind = (info >> KIND_SHIFT) & KIND_MASK
            vlen = info & VLEN_MASK
            kflag = info >> KFLAG_SHIFT
            name = string(name_off)
            extra = _FIXED_EXTRA.get(kind, 0) + _PER_VLEN.get(kind, 0) * vlen
            if pos + extra > end:
                self.fail(f"record of kind {kind} with {vlen} entries runs past the type "
                          f"section", btf_id, rec_pos)
            if kind == K_INT:
                (enc,) = u32.unpack_from(data, pos)
                pos += 4
                encoding = (enc >> K.INT_ENCODING_SHIFT) & 0xF
                signed = bool(encoding & INT_SIGNED)
                t = M.Type(M.INT, name, size_type, signed=signed,
                           encoding="bool" if encoding & INT_BOOL else
                           "char" if encoding & INT_CHAR else
                           "signed" if signed else "unsigned")
                # without kind_flag a bitfield's width/extra offset live in its INT type
                bits, bit_off = enc & 0xFF, (enc >> K.INT_OFFSET_SHIFT) & 0xFF
                if bits != size_type * 8 or bit_off:
                    int_bits[btf_id] = (bit_off, bits)
                records.append(t)
            elif kind in _SIMPLE_REF:
                records.append(M.Type(_SIMPLE_REF[kind], name, ref=size_type))
            elif kind == K_ARRAY:
                elem, _index, nelems = arr.unpack_from(data, pos)
                pos += 12
                records.append(M.Type(M.ARRAY, None, ref=elem, nelems=nelems))
            elif kind == K_STRUCT or kind == K_UNION:
                members = []
                for mname_off, mtype, moff in arr.iter_unpack(data[pos:pos + 12 * vlen]):
                    if kflag:
                        members.append(M.Member(string(mname_off), mtype, moff & OFF_MASK,
                                                moff >> BF_SHIFT))
                    else:
                        members.append(M.Member(string(mname_off), mtype, moff, 0))
                pos += 12 * vlen
                records.append(M.Type(M.STRUCT if kind == K_STRUCT else M.UNION, name,
                                      size_type, members=members))
            elif kind == K_ENUM:
                fmt = enum32 if kflag else enum32u
                vals = [(string(n), v) for n, v in fmt.iter_unpack(data[pos:pos + 8 * vlen])]
                pos += 8 * vlen
                records.append(M.Type(M.ENUM, name, size_type, enumerators=vals,
                                      signed=bool(kflag)))
            elif kind == K_ENUM64:
                vals = []
                for n, lo, hi in enum64.iter_unpack(data[pos:pos + 12 * vlen]):
                    v = (hi << 32) | lo
                    if kflag and v >= 1 << 63:
                        v -= 1 << 64
                    vals.append((string(n), v))
                pos += 12 * vlen
                records.append(M.Type(M.ENUM, name, size_type, enumerators=vals,
                                      signed=bool(kflag)))
            elif kind == K_FWD:
                records.append(M.Type(M.FWD, name, encoding="union" if kflag else "struct"))
            elif kind == K_FUNC:
                records.append(("func", name, size_type, vlen == FUNC_STATIC))
                if vlen not in _LINKAGE:
                    self.fail(f"FUNC with unknown linkage {vlen}", btf_id, rec_pos)
            elif kind == K_FUNC_PROTO:
                params, variadic = [], False
                for pname_off, ptype in pair.iter_unpack(data[pos:pos + 8 * vlen]):
                    if ptype == 0 and pname_off == 0:
                        variadic = True
                    else:
                        params.append(M.Param(string(pname_off), ptype))
                pos += 8 * vlen
                records.append(M.Type(M.FUNC_PROTO, None, ref=size_type, params=params,
                                      variadic=variadic))
            elif kind == K_VAR:
                if pos + 4 > end:
                    self.fail("record runs past the type section", btf_id, rec_pos)
                (linkage,) = u32.unpack_from(data, pos)
                pos += 4
                if linkage not in _LINKAGE:
                    self.fail(f"VAR with unknown linkage {linkage}", btf_id, rec_pos)
                records.append(("var", name, size_type, _LINKAGE[linkage]))
            elif kind == K_DATASEC:
                if pos + 12 * vlen > end:
                    self.fail("record runs past the type section", btf_id, rec_pos)
                entries = list(arr.iter_unpack(data[pos:pos + 12 * vlen]))
                pos += 12 * vlen
                records.append(("datasec", name, size_type, entries))
            elif kind == K_FLOAT:
                records.append(M.Type(M.FLOAT, name, size_type))
            elif kind == K_DECL_TAG:
                if pos + 4 > end:
                    self.fail("record runs past the type section", btf_id, rec_pos)
                (component,) = struct.unpack_from(bo + "i", data, pos)
                pos += 4
                records.append(("decl_tag", name, size_type, component))
            else:
                self.fail(f"unknown BTF kind {kind}", btf_id, rec_pos)
            if pos > end:
                self.fail("record runs past the type section", btf_id, rec_pos)
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
        if base is not None:
            g.types = list(base.graph.types)
            g.ptr_size = base.graph.ptr_size
            first = base.type_count
            model_id[:first] = base.model_id
            for btf_id in range(1, first):   # the base's functions/vars are not in this graph
                ids[btf_id] = ("type", model_id[btf_id]) if model_id[btf_id] else ("base", 0)
        counts = {"func": 0, "var": 0, "datasec": 0, "decl_tag": 0}
        for btf_id in range(first, n):
            r = records[btf_id]
            if isinstance(r, M.Type):
                model_id[btf_id] = g.add(r)
                ids[btf_id] = ("type", model_id[btf_id])
            else:
                ids[btf_id] = (r[0], counts[r[0]])
                counts[r[0]] += 1
        self.btf_ids = ids
        self.model_id, self.int_bits = model_id, int_bits

        def remap(ref: Optional[int], btf_id: int) -> int:
            if ref is None or ref == 0:
                return 0
            if ref >= n or ids[ref][0] != "type":
                self.fail(f"reference to type id {ref}, which is not a type", btf_id, 0)
            return model_id[ref]

        def target(ref: int, btf_id: int, allowed: tuple) -> Optional[tuple]:
            if 0 < ref < n and ids[ref][0] == "base":
                return None
            if not 0 < ref < n or ids[ref][0] not in allowed:
                self.fail(f"reference to id {ref}, which is not a {' or '.join(allowed)}",
                          btf_id, 0)
            return ids[ref]

        for btf_id in range(first, n):
            r = records[btf_id]
            if not isinstance(r, M.Type):
                what = r[0]
                if what == "func":
                    _, name, proto, static = r
                    g.functions.append(M.Function(name, remap(proto, btf_id), static=static))
                elif what == "var":
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
            k = r.kind
            if r.ref is not None:
                r.ref = remap(r.ref, btf_id)
            if r.members:
                for m in r.members:
                    if not m.bit_size and m.type in int_bits:
                        extra_off, m.bit_size = int_bits[m.type]
                        m.bit_offset += extra_off
                    m.type = remap(m.type, btf_id)
            if k == M.FUNC_PROTO:
                for p in r.params:
                    p.type = remap(p.type, btf_id)
        return g
