"""A compiled BPF object's `.BTF` and `.BTF.ext` sections: its own types and its CO-RE
relocations (what `bpftool gen min_core_btf` and libbpf read).

`.BTF.ext` layout (libbpf's btf.h / btf_ext.c): a header -- magic 0xeb9f (u16), version (u8),
flags (u8), hdr_len (u32), then offset/length pairs (u32) of the func_info, line_info and,
when hdr_len allows, core_relo subsections, offsets counted from the end of the header.
Each subsection is a record size (u32) followed by blocks `{sec_name_off, num_info,
num_info records}`, one per program section.  A CO-RE record is {insn_off, type_id,
access_str_off, kind}, all u32; names and access strings are offsets into `.BTF`'s
string section.  Every count and size is checked against the section before it is used.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .. import model as M
from ..elf import ElfFile
from ..errors import BtfError, ElfError
from . import kinds as K
from .reader import read_btf_ids

# enum bpf_core_relo_kind (include/uapi/linux/bpf.h)
RELO_KINDS = ("field_byte_offset", "field_byte_size", "field_exists", "field_signed",
              "field_lshift_u64", "field_rshift_u64", "type_id_local", "type_id_target",
              "type_exists", "type_size", "enumval_exists", "enumval_value", "type_matches")
FIELD_KINDS = frozenset(range(0, 6))
TYPE_KINDS = frozenset((6, 7, 8, 9, 12))
ENUMVAL_KINDS = frozenset((10, 11))
TYPE_ID_LOCAL, TYPE_MATCHES = 6, 12

EXT_HEADER = 24                  # up to line_info_len
EXT_HEADER_CORE = 32             # with core_relo_off/len
CORE_RELO_SIZE = 16
MAX_ACCESS_LEN = 64              # libbpf's BPF_CORE_SPEC_MAX_LEN


@dataclass(frozen=True)
class CoreRelo:
    section: str                 # the program's ELF section, e.g. "tracepoint/sock/..."
    insn_off: int                # byte offset of the instruction in that section
    type_id: int                 # root type: a BTF id in the object's own .BTF
    access: str                  # access string, "0:1:2"
    kind: int                    # RELO_KINDS index

    @property
    def kind_name(self) -> str:
        return RELO_KINDS[self.kind] if 0 <= self.kind < len(RELO_KINDS) else str(self.kind)


@dataclass
class BpfObject:
    path: str
    graph: M.TypeGraph           # the object's own types (local BTF)
    btf_ids: list                # BTF id -> (what, index) (reader.read_btf_ids)
    relos: list = field(default_factory=list)      # [CoreRelo]

    def local_type(self, btf_id: int) -> int:
        """Model type id of BTF id `btf_id` of this object (BtfError if it is no type)."""
        if not 0 <= btf_id < len(self.btf_ids) or self.btf_ids[btf_id][0] != "type":
            raise BtfError(f"{self.path}: a CO-RE relocation names BTF id {btf_id}, "
                           f"which is not a type of the object")
        return self.btf_ids[btf_id][1]


def read_object(path: str) -> BpfObject:
    """The types and CO-RE relocations of a BPF object file (ELF, clang -target bpf -g).
    ElfError/BtfError (one line naming the file) for anything else."""
    with ElfFile(path) as elf:
        btf = elf.section_data(".BTF")
        ext = elf.section_data(".BTF.ext")
        endian = elf.endian
        if elf.machine != 247:                     # EM_BPF
            raise ElfError(f"{path}: not a BPF object (ELF machine {elf.machine}, "
                           f"expected EM_BPF 247)")
    if btf is None:
        raise BtfError(f"{path}: no .BTF section (build the object with clang -g)")
    if ext is None:
        raise BtfError(f"{path}: no .BTF.ext section, so no CO-RE relocations to satisfy "
                       f"(build it with clang -target bpf -g)")
    graph, ids = read_btf_ids(btf, f"{path}:.BTF")
    strings = _StringTable(btf, path)
    relos = read_core_relos(ext, strings, endian, f"{path}:.BTF.ext")
    return BpfObject(path, graph, ids, relos)


class _StringTable:
    """Strings of a raw BTF blob's string section, by offset (bounded)."""

    def __init__(self, btf: bytes, path: str):
        bo = "<" if struct.unpack_from("<H", btf, 0)[0] == K.MAGIC else ">"
        hdr_len, _to, _tl, str_off, str_len = struct.unpack_from(bo + "IIIII", btf, 4)
        self.data = btf[hdr_len + str_off:hdr_len + str_off + str_len]
        self.path = path

    def __call__(self, off: int) -> str:
        if not 0 <= off < len(self.data):
            raise BtfError(f"{self.path}:.BTF.ext: string offset {off} outside .BTF's "
                           f"string section ({len(self.data)} bytes)")
        end = self.data.find(b"\0", off)
        if end < 0:
            raise BtfError(f"{self.path}:.BTF.ext: unterminated string at offset {off}")
        return self.data[off:end].decode("utf-8", "replace")


def read_core_relos(data: bytes, strings, endian: str, source: str) -> list:
    """The CO-RE relocations of a `.BTF.ext` section (empty if it has none)."""
    if len(data) < EXT_HEADER:
        raise BtfError(f"{source}: too short for a .BTF.ext header ({len(data)} bytes)")
    magic, version, _flags, hdr_len = struct.unpack_from(endian + "HBBI", data, 0)
    if magic != K.MAGIC:
        raise BtfError(f"{source}: not a .BTF.ext section (magic 0x{magic:04x})")
    if version != K.VERSION:
        raise BtfError(f"{source}: unsupported .BTF.ext version {version}")
    if hdr_len < EXT_HEADER or hdr_len > len(data):
        raise BtfError(f"{source}: bad header length {hdr_len}")
    if hdr_len < EXT_HEADER_CORE:
        return []
    core_off, core_len = struct.unpack_from(endian + "II", data, EXT_HEADER)
    start, end = hdr_len + core_off, hdr_len + core_off + core_len
    if core_len == 0:
        return []
    if end > len(data) or core_len < 4:
        raise BtfError(f"{source}: CO-RE relocation subsection ({start}+{core_len}) runs "
                       f"past the section ({len(data)} bytes)")
    (rec_size,) = struct.unpack_from(endian + "I", data, start)
    if rec_size < CORE_RELO_SIZE or rec_size % 4:
        raise BtfError(f"{source}: CO-RE relocation record size {rec_size} (expected >= "
                       f"{CORE_RELO_SIZE}, a multiple of 4)")
    rec = struct.Struct(endian + "IIII")
    pos = start + 4
    out = []
    while pos < end:
        if pos + 8 > end:
            raise BtfError(f"{source}: truncated CO-RE section block at byte {pos}")
        sec_off, num = struct.unpack_from(endian + "II", data, pos)
        pos += 8
        if num == 0 or pos + num * rec_size > end:
            raise BtfError(f"{source}: CO-RE block at byte {pos - 8} claims {num} records "
                           f"of {rec_size} bytes, past the subsection's end")
        section = strings(sec_off)
        for i in range(num):
            insn_off, type_id, access_off, kind = rec.unpack_from(data, pos + i * rec_size)
            if kind >= len(RELO_KINDS):
                raise BtfError(f"{source}: unknown CO-RE relocation kind {kind} "
                               f"({section}, record {i})")
            out.append(CoreRelo(section, insn_off, type_id, strings(access_off), kind))
        pos += num * rec_size
    return out
