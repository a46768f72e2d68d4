"""Raw BTF (/sys/kernel/btf/vmlinux, *.btf, an ELF's .BTF section) -> TypeGraph.

Layout (include/uapi/linux/btf.h): a 24-byte header, then a type section of variable-length
records, then a string section.  Type ids start at 1 in record order (0 is void).
Every kind current kernels emit is understood; VAR, DATASEC and DECL_TAG carry nothing the
type DB needs and are read past.  FUNC records become `model.Function`s.
"""
from __future__ import annotations

import struct
from typing import Optional

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


def read_btf(data: bytes, source: str = "BTF") -> M.TypeGraph:
    """Parse raw BTF bytes.  `source` names the input in error messages."""
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
    return _Parser(data, bo, types_start, types_end, strs_start, strs_end, source).parse()


class _Parser:
    def __init__(self, data, bo, types_start, types_end, strs_start, strs_end, source):
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
        s = self._str_cache.get(off)
        if s is None:
            start = self.strs_start + off
            end = self.data.find(b"\0", start, self.strs_end)
            if start >= self.strs_end or end < 0:
                raise BtfError(f"{self.source}: string offset {off} outside the string section")
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
        records: list = [None]          # btf id -> Type or ("func", name, proto, static) or None
        int_bits: dict = {}             # btf id of an INT -> (bit offset, bits) when partial
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
                pos += 4
                records.append(None)
            elif kind == K_DATASEC:
                pos += 12 * vlen
                records.append(None)
            elif kind == K_FLOAT:
                records.append(M.Type(M.FLOAT, name, size_type))
            elif kind == K_DECL_TAG:
                pos += 4
                records.append(None)
            else:
                self.fail(f"unknown BTF kind {kind}", btf_id, rec_pos)
            if pos > end:
                self.fail("record runs past the type section", btf_id, rec_pos)
        g = self._to_graph(records, int_bits)
        M.check_references(g, self.source)
        return g

    def _to_graph(self, records: list, int_bits: dict) -> M.TypeGraph:
        g = M.TypeGraph(source="btf")
        model_id = [0] * len(records)
        for btf_id in range(1, len(records)):
            r = records[btf_id]
            if isinstance(r, M.Type):
                model_id[btf_id] = g.add(r)
        n = len(records)

        def remap(ref: Optional[int], btf_id: int) -> int:
            if ref is None or ref == 0:
                return 0
            if ref >= n or (ref and model_id[ref] == 0):
                self.fail(f"reference to type id {ref}, which is not a type", btf_id, 0)
            return model_id[ref]

        for btf_id in range(1, n):
            r = records[btf_id]
            if r is None:
                continue
            if not isinstance(r, M.Type):
                _, name, proto, static = r
                g.functions.append(M.Function(name, remap(proto, btf_id), static=static))
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

