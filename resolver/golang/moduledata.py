"""runtime.firstmoduledata: the linker's table of the module's regions, found without symbols.

Its first word points at the pclntab (Go 1.16+: `pcHeader`; 1.2-1.15: the `pclntable` slice
data), so it is found by looking for that address in the writable segments.  Fields used:
  types, etypes  the type data region (nameOff/typeOff are relative to `types`)
                 word 25 (1.7-1.15), 35 (1.16-1.19), 37 (1.20+; covctrs/ecovctrs added)
  itablinks      []*itab: found after etypes as the slice whose elements all point at itabs
                 (itab = inter *interfacetype, _type *_type, ... both inside the type region).
                 Go 1.27 has no itablinks: the itabs sit back to back inside the type region,
                 at types+itaboff for itabsize bytes (two words after etypes, which moved one
                 word down); each is 2*ptr+8+len(inter.Methods)*ptr bytes (one fun word when
                 fun[0] is 0).
  typelinks      []int32 offsets from types: the slice right before itablinks (Go <= 1.26).
  typedesclen    Go 1.27: the word between types and etypes, the length of the typelink
                 descriptors that start at types+ptr (typeinfo.py walks them).
Where it lives: `.go.module` (Go 1.26+) or `.noptrdata` when the section headers are there,
else somewhere in a writable segment.

Type records (abi.Type, 4*ptr+16 bytes): size, ptrdata, hash(u32), tflag, align, fieldAlign,
kind, equal, gcdata, str (nameOff, i32), ptrToThis.  tflag bits: 1 uncommon, 2 extra star,
4 named.  An uncommon record (pkgPath nameOff first) follows the kind-specific part.
Names: a flags byte, then the length (uvarint from Go 1.17, 2 big-endian bytes before), bytes.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from dbhive.elf import PF_W, ElfFile
from dbhive.leb128 import uleb128
from .pclntab import MAGIC_12, MAGIC_116, MAGIC_118, MAGIC_120, Pclntab

TFLAG_UNCOMMON, TFLAG_EXTRA_STAR, TFLAG_NAMED = 1, 2, 4
KIND_ARRAY, KIND_CHAN, KIND_FUNC, KIND_INTERFACE = 17, 18, 19, 20
KIND_MAP, KIND_PTR, KIND_SLICE, KIND_STRUCT = 21, 22, 23, 25
TYPES_WORD = {MAGIC_12: 25, MAGIC_116: 35, MAGIC_118: 35, MAGIC_120: 37}
MAX_NAME_LEN_BYTES = 10        # a uvarint length is at most 10 bytes


@dataclass
class ModuleData:
    address: int
    types: int
    etypes: int
    itablinks: List[int] = field(default_factory=list)
    typelinks: List[int] = field(default_factory=list)     # type addresses, sorted by string
    typedesclen: int = 0                                    # Go 1.27


def _words(img: ElfFile, addr: int, n: int) -> Optional[List[int]]:
    raw = img.read(addr, n * img.ptr_size)
    if raw is None:
        return None
    return list(struct.unpack(img.endian + ("Q" if img.is64 else "I") * n, raw))


MODULEDATA_SECTIONS = (".go.module", ".noptrdata")


def find_moduledata(img: ElfFile, tab: Pclntab) -> Optional[ModuleData]:
    needle = struct.pack(img.endian + ("Q" if img.is64 else "I"), tab.vaddr)
    tw = TYPES_WORD[tab.magic]
    regions = []          # (vaddr, file offset, size), searched in place in the mapping
    for name in MODULEDATA_SECTIONS:
        sec = img.section(name)
        if sec is not None and sec.addr and 0 < sec.size and sec.offset + sec.size <= img.size:
            regions.append((sec.addr, sec.offset, sec.size))
    regions += [(p.vaddr, p.offset, min(p.filesz, img.size - p.offset)) for p in img.loads
                if p.flags & PF_W and p.offset < img.size]
    for vaddr, lo, size in regions:
        i = img.data.find(needle, lo, lo + size)
        while i >= 0:
            if (i - lo) % img.ptr_size == 0:
                md = _check(img, vaddr + i - lo, tw)
                if md is not None:
                    return md
            i = img.data.find(needle, i + 1, lo + size)
    return None


def _in_ro(img: ElfFile, addr: int) -> bool:
    return img.segment_for_vaddr(addr) is not None


def _check(img: ElfFile, addr: int, types_word: int) -> Optional[ModuleData]:
    words = _words(img, addr, types_word + 40)
    if words is None:
        return None
    types = words[types_word]
    if not (types and _in_ro(img, types)):
        return None
    # etypes: the next word that lies above types in the same segment.
    seg = img.segment_for_vaddr(types)
    for k in (types_word + 1, types_word + 2):
        etypes = words[k]
        if types < etypes <= seg.vaddr + seg.memsz:
            break
    else:
        return None
    md = ModuleData(addr, types, etypes)
    for j in range(k + 1, k + 3):
        off, size = words[j], words[j + 1]
        if 0 < off and 0 < size and off + size <= etypes - types:
            found = _walk_itabs(img, types + off, types + off + size, types, etypes)
            if found:
                md.itablinks = found
                if k == types_word + 2 and 0 < words[k - 1] <= etypes - types:
                    md.typedesclen = words[k - 1]
                return md
    # itablinks: a (ptr, len, cap) slice after etypes whose elements point at itabs.
    for j in range(k + 1, len(words) - 2):
        ptr, n, cap = words[j], words[j + 1], words[j + 2]
        if not (ptr and 0 < n == cap < 1 << 20 and _in_ro(img, ptr)):
            continue
        elems = _words(img, ptr, n)
        if elems is None or not all(types <= e < etypes for e in elems[:4]):
            continue
        inter_typ = _words(img, elems[0], 2)
        if inter_typ and all(types <= x < etypes for x in inter_typ):
            md.itablinks = elems
            md.typelinks = _typelinks(img, words[j - 3:j], types, etypes)
            break
    return md


def _typelinks(img: ElfFile, slice_words: List[int], types: int, etypes: int) -> List[int]:
    """The typelinks slice (ptr, len, cap) of int32 offsets from types, as type addresses;
    [] when it is not one."""
    if len(slice_words) != 3:
        return []
    ptr, n, cap = slice_words
    if not (ptr and 0 < n == cap < 1 << 24):
        return []
    raw = img.read(ptr, 4 * n)
    if raw is None:
        return []
    offs = struct.unpack(img.endian + "%di" % n, raw)
    if not all(0 <= o < etypes - types for o in offs):
        return []
    return [types + o for o in offs]


def _walk_itabs(img: ElfFile, start: int, end: int, types: int, etypes: int) -> List[int]:
    """Addresses of the itabs laid back to back in [start, end) (Go 1.27); [] if they do not
    parse as itabs.  One read of the run; each interface's method count read once."""
    p = img.ptr_size
    methods_len_at = 4 * p + 16 + 2 * p      # interfacetype: Type, PkgPath, Methods.ptr, .len
    raw = img.read(start, end - start) if end - start <= 1 << 28 else None
    if raw is None:
        return []
    word = struct.Struct(img.endian + ("Q" if img.is64 else "I")).unpack_from
    counts: Dict[int, Optional[int]] = {}
    out = []
    o = 0
    while o < len(raw):
        if o + 2 * p + 8 + p > len(raw):
            return []
        inter, typ, fun0 = word(raw, o)[0], word(raw, o + p)[0], word(raw, o + 2 * p + 8)[0]
        if not (types <= inter < etypes and types <= typ < etypes):
            return []
        out.append(start + o)
        n = 1
        if fun0:
            if inter not in counts:
                c = _words(img, inter + methods_len_at, 1)
                counts[inter] = c[0] if c and 0 < c[0] < 1 << 12 else None
            n = counts[inter]
            if n is None:
                return []
        o += 2 * p + 8 + n * p
    return out if o == len(raw) else []


class TypeReader:
    """Names of runtime type records (for naming itabs)."""

    def __init__(self, img: ElfFile, md: ModuleData, varint_names: bool):
        self.img = img
        self.md = md
        self.varint_names = varint_names
        self.p = img.ptr_size
        self.type_size = 4 * self.p + 16

    def _name(self, addr: int) -> Optional[str]:
        raw = self.img.read(addr, 3)
        if raw is None:
            return None
        if self.varint_names:
            head = self.img.read(addr, 1 + MAX_NAME_LEN_BYTES) or raw
            try:
                n, pos = uleb128(head, 1)       # Go's uvarint
            except IndexError:
                return None
        else:
            n, pos = (raw[1] << 8) | raw[2], 3
        data = self.img.read(addr + pos, n)
        return None if data is None else data.decode("utf-8", "replace")

    def _type_header(self, t: int):
        raw = self.img.read(t, self.type_size)
        if raw is None:
            return None
        p, e = self.p, self.img.endian
        tflag, kind = raw[2 * p + 4], raw[2 * p + 7] & 0x1F
        str_off = struct.unpack_from(e + "i", raw, 4 * p + 8)[0]
        return tflag, kind, str_off

    def _kind_size(self, kind: int) -> int:
        p = self.p
        return {KIND_STRUCT: 4 * p, KIND_INTERFACE: 4 * p, KIND_PTR: p, KIND_SLICE: p,
                KIND_CHAN: 2 * p, KIND_ARRAY: 3 * p, KIND_FUNC: 8 if p == 8 else 4}.get(kind, 0)

    def string(self, t: int) -> Optional[str]:
        """The type's short string as reflect prints it ("*tls.Conn")."""
        hdr = self._type_header(t)
        if hdr is None:
            return None
        tflag, _kind, str_off = hdr
        s = self._name(self.md.types + str_off)
        if s is not None and tflag & TFLAG_EXTRA_STAR and s.startswith("*"):
            s = s[1:]
        return s

    def pkg_path(self, t: int) -> Optional[str]:
        hdr = self._type_header(t)
        if hdr is None or not hdr[0] & TFLAG_UNCOMMON or hdr[1] == KIND_MAP:
            return None
        raw = self.img.read(t + self.type_size + self._kind_size(hdr[1]), 4)
        if raw is None:
            return None
        off = struct.unpack(self.img.endian + "i", raw)[0]
        return self._name(self.md.types + off) if off else None

    def full_name(self, t: int) -> Optional[str]:
        """The type as the linker spells it: package paths in full ("*crypto/tls.Conn")."""
        hdr = self._type_header(t)
        if hdr is None:
            return None
        if hdr[1] == KIND_PTR:
            elem = _words(self.img, t + self.type_size, 1)
            inner = self.full_name(elem[0]) if elem else None
            return None if inner is None else "*" + inner
        s = self.string(t)
        if s is None or not hdr[0] & TFLAG_NAMED:
            return s
        pkg = self.pkg_path(t)
        if pkg and "." in s:
            return pkg + "." + s.split(".", 1)[1]
        return s


def _short(full: str) -> str:
    """'*crypto/tls.Conn' -> '*tls.Conn' (the spelling of the type's own string)."""
    star = "*" if full.startswith("*") else ""
    return star + full.lstrip("*").rsplit("/", 1)[-1]


def itab_addresses(img: ElfFile, tab: Pclntab, md: ModuleData,
                   wanted: Optional[List[str]] = None) -> Dict[str, int]:
    """{"*net.TCPConn,net.Conn": itab address} for the itabs the module links (all of them,
    or those named in `wanted`)."""
    shorts = None
    if wanted is not None:
        shorts = {tuple(_short(x) for x in w.split(",", 1)) for w in wanted if "," in w}
    varint = tab.magic in (MAGIC_118, MAGIC_120)
    if tab.magic == MAGIC_116:
        varint = _probe_varint_names(img, md)
    reader = TypeReader(img, md, varint)
    out: Dict[str, int] = {}
    for addr in md.itablinks:
        words = _words(img, addr, 2)
        if words is None:
            continue
        inter, typ = words
        if shorts is not None and (reader.string(typ), reader.string(inter)) not in shorts:
            continue
        a, b = reader.full_name(typ), reader.full_name(inter)
        if a and b:
            out.setdefault(f"{a},{b}", addr)
    return out


def _probe_varint_names(img: ElfFile, md: ModuleData) -> bool:
    """Go 1.16 and 1.17 share a pclntab magic but not the name encoding: try both."""
    if not md.itablinks:
        return True
    words = _words(img, md.itablinks[0], 1)
    if not words:
        return True
    for varint in (True, False):
        s = TypeReader(img, md, varint).string(words[0])
        if s and s.isprintable() and "." in s:
            return varint
    return True
