"""Member offsets of named structs from a Go binary's own DWARF, read directly.

Go names its struct DIEs with the full package path ("crypto/tls.Conn") as an inline
DW_FORM_string right after the abbreviation code.  So instead of walking every DIE (seconds
for a 10 MB binary), the name is searched for in .debug_info, the DIE that holds it is decoded
with its unit's abbreviation table, and only its children are read.
Sections may be compressed (SHF_COMPRESSED with an Elf_Chdr, or the older `.zdebug_*` with a
"ZLIB" + 8-byte big-endian size header).
"""
from __future__ import annotations

import struct
import zlib
from typing import Dict, Iterable, List, Optional, Tuple

from dbhive.dwarf_forms import F, expr_offset, fixed_size, parse_abbrev_table, sleb, uleb

from ..elfsyms import ElfImage

SHF_COMPRESSED = 0x800
TAG_MEMBER, TAG_STRUCT, TAG_TYPEDEF = 0x0D, 0x13, 0x16
AT_NAME, AT_TYPE, AT_MEMBER_LOCATION = 0x03, 0x49, 0x38


class DwarfUnavailable(Exception):
    pass


def section_data(img: ElfImage, name: str) -> Optional[bytes]:
    sec = img.section(name)
    if sec is not None:
        raw = bytes(img.section_bytes(sec))
        if sec.flags & SHF_COMPRESSED:
            hdr = 24 if img.is64 else 12
            ch_type = struct.unpack_from(img.endian + "I", raw, 0)[0]
            if ch_type != 1:
                raise DwarfUnavailable(f"{name}: unsupported compression type {ch_type}")
            return zlib.decompress(raw[hdr:])
        return raw
    zsec = img.section(".z" + name[1:])
    if zsec is not None:
        raw = bytes(img.section_bytes(zsec))
        if raw[:4] == b"ZLIB":
            return zlib.decompress(raw[12:])
        return raw
    return None


class Unit:
    __slots__ = ("offset", "end", "version", "addr_size", "off_size", "abbrevs", "die_start")


class GoDwarf:
    def __init__(self, img: ElfImage):
        info = section_data(img, ".debug_info")
        abbrev = section_data(img, ".debug_abbrev")
        if not info or not abbrev:
            raise DwarfUnavailable("no DWARF")
        self.info, self.abbrev = info, abbrev
        self._img = img
        self._strs: Optional[bytes] = None
        self._line_strs: Optional[bytes] = None
        self._candidates: Dict[str, List[int]] = {}
        self.endian = img.endian
        self._units: Optional[List[Tuple[int, int]]] = None
        self._abbrev_cache: Dict[int, dict] = {}
        self._struct_cache: Dict[str, Optional[Dict[str, int]]] = {}

    @property
    def strs(self) -> bytes:
        if self._strs is None:
            self._strs = section_data(self._img, ".debug_str") or b""
        return self._strs

    @property
    def line_strs(self) -> bytes:
        if self._line_strs is None:
            self._line_strs = section_data(self._img, ".debug_line_str") or b""
        return self._line_strs

    def prefetch(self, names: Iterable[str]) -> None:
        """Find where all these names occur in one pass over .debug_info."""
        import re
        names = [n for n in set(names) if n not in self._candidates]
        if not names:
            return
        for n in names:
            self._candidates[n] = []
        rx = re.compile(b"(" + b"|".join(re.escape(n.encode()) for n in
                                          sorted(names, key=len, reverse=True)) + b")\0")
        for m in rx.finditer(self.info):
            self._candidates[m.group(1).decode()].append(m.start())

    # --- units ---------------------------------------------------------------------------
    def _unit_at(self, pos: int) -> Unit:
        if self._units is None:
            self._units = []
            o = 0
            while o + 11 <= len(self.info):
                length = struct.unpack_from(self.endian + "I", self.info, o)[0]
                hdr = 4
                if length == 0xFFFFFFFF:
                    length = struct.unpack_from(self.endian + "Q", self.info, o + 4)[0]
                    hdr = 12
                self._units.append((o, o + hdr + length))
                o += hdr + length
        for start, end in self._units:
            if start <= pos < end:
                return self._parse_unit(start, end)
        raise DwarfUnavailable("offset outside every unit")

    def _parse_unit(self, start: int, end: int) -> Unit:
        e, d = self.endian, self.info
        u = Unit()
        u.offset, u.end = start, end
        length = struct.unpack_from(e + "I", d, start)[0]
        o = start + 4
        u.off_size = 4
        if length == 0xFFFFFFFF:
            o, u.off_size = start + 12, 8
        u.version = struct.unpack_from(e + "H", d, o)[0]
        o += 2
        off_fmt = e + ("I" if u.off_size == 4 else "Q")
        if u.version >= 5:
            u.addr_size = d[o + 1]      # d[o] is the unit type
            abbrev_off = struct.unpack_from(off_fmt, d, o + 2)[0]
            o += 2 + u.off_size
        else:
            abbrev_off = struct.unpack_from(off_fmt, d, o)[0]
            u.addr_size = d[o + u.off_size]
            o += u.off_size + 1
        u.die_start = o
        if abbrev_off not in self._abbrev_cache:
            self._abbrev_cache[abbrev_off] = parse_abbrev_table(self.abbrev, abbrev_off, len(self.abbrev))
        u.abbrevs = self._abbrev_cache[abbrev_off]
        return u

    # --- DIEs ----------------------------------------------------------------------------
    def _die(self, u: Unit, o: int):
        """(abbrev or None for a null entry, {attr: value} for name/type/member location, next)."""
        d = self.info
        code, o = uleb(d, o)
        if code == 0:
            return None, None, o
        ab = u.abbrevs.get(code)
        if ab is None:
            raise DwarfUnavailable(f"unknown abbreviation {code}")
        attrs = {}
        for at, form, implicit in ab.specs:
            value, o = self._form(u, form, o, implicit)
            if at in (AT_NAME, AT_TYPE, AT_MEMBER_LOCATION):
                if at == AT_TYPE and form in (F["ref1"], F["ref2"], F["ref4"], F["ref8"], F["ref_udata"]):
                    value += u.offset
                attrs[at] = value
        return ab, attrs, o

    def _form(self, u: Unit, form: int, o: int, implicit):
        d, e = self.info, self.endian
        if form == F["string"]:
            end = d.index(b"\0", o)
            return d[o:end].decode("utf-8", "replace"), end + 1
        if form in (F["udata"], F["ref_udata"], F["strx"], F["addrx"], F["loclistx"], F["rnglistx"]):
            return uleb(d, o)
        if form == F["sdata"]:
            return sleb(d, o)
        if form in (F["exprloc"], F["block"]):
            n, o = uleb(d, o)
            return ("expr", o, o + n), o + n
        if form == F["block1"]:
            n = d[o]
            return ("expr", o + 1, o + 1 + n), o + 1 + n
        if form == F["block2"]:
            n = struct.unpack_from(e + "H", d, o)[0]
            return ("expr", o + 2, o + 2 + n), o + 2 + n
        if form == F["block4"]:
            n = struct.unpack_from(e + "I", d, o)[0]
            return ("expr", o + 4, o + 4 + n), o + 4 + n
        if form == F["indirect"]:
            real, o = uleb(d, o)
            return self._form(u, real, o, implicit)
        if form == F["implicit_const"]:
            return implicit, o
        size = fixed_size(form, u.addr_size, u.off_size, u.version)
        if size is None:
            raise DwarfUnavailable(f"unsupported DWARF form 0x{form:x}")
        if size == 0:
            return True, o
        if size in (1, 2, 4, 8):
            value = struct.unpack_from(e + {1: "B", 2: "H", 4: "I", 8: "Q"}[size], d, o)[0]
            if form == F["strp"]:
                end = self.strs.index(b"\0", value)
                value = self.strs[value:end].decode("utf-8", "replace")
            elif form == F["line_strp"]:
                end = self.line_strs.index(b"\0", value)
                value = self.line_strs[value:end].decode("utf-8", "replace")
            return value, o + size
        return None, o + size

    def _member_offset(self, value) -> Optional[int]:
        if isinstance(value, tuple):
            return expr_offset(self.info, value[1], value[2])
        return value if isinstance(value, int) else None

    # --- queries -------------------------------------------------------------------------
    def struct_members(self, name: str) -> Optional[Dict[str, int]]:
        """{member name: byte offset} of the struct type named `name`, or None if absent."""
        if name in self._struct_cache:
            return self._struct_cache[name]
        result = None
        self.prefetch([name])
        for i in self._candidates[name]:
            if result is not None:
                break
            for back in (1, 2):      # the abbreviation code (uleb) just before the name
                try:
                    result = self._struct_at(i - back, name)
                except (DwarfUnavailable, IndexError, ValueError, struct.error):
                    result = None
                if result is not None:
                    break
        self._struct_cache[name] = result
        return result

    def _struct_at(self, o: int, name: str, depth: int = 0) -> Optional[Dict[str, int]]:
        u = self._unit_at(o)
        ab, attrs, nxt = self._die(u, o)
        if ab is None or attrs.get(AT_NAME) != name and depth == 0:
            return None
        if ab.tag == TAG_TYPEDEF and AT_TYPE in attrs and depth < 4:
            target = attrs[AT_TYPE]
            tu = self._unit_at(target)
            tab, tattrs, _ = self._die(tu, target)
            if tab is None:
                return None
            return self._struct_at(target, tattrs.get(AT_NAME), depth + 1)
        if ab.tag != TAG_STRUCT:
            return None
        members: Dict[str, int] = {}
        if not ab.children:
            return members
        level, o = 1, nxt
        while level > 0:
            cab, cattrs, o = self._die(u, o)
            if cab is None:
                level -= 1
                continue
            if level == 1 and cab.tag == TAG_MEMBER and AT_NAME in cattrs:
                off = self._member_offset(cattrs.get(AT_MEMBER_LOCATION, 0))
                if off is not None:
                    members[cattrs[AT_NAME]] = off
            if cab.children:
                level += 1
        return members
