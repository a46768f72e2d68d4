"""Member offsets of named structs from a Go binary's own DWARF, read directly.

Go names its struct DIEs with the full package path ("crypto/tls.Conn") as an inline
DW_FORM_string right after the abbreviation code.  So instead of walking every DIE (seconds
for a 10 MB binary), the name is searched for in .debug_info, the DIE that holds it is decoded
with its unit's abbreviation table, and only its children are read.

The ELF side (sections, compressed or not) is the project's ELF layer; unit headers,
abbreviation tables and forms are the kernel-side DWARF reader's own pieces.
"""
from __future__ import annotations

import bisect
import struct
from typing import Dict, Iterable, List, Optional

from dbhive.dwarf.forms import FORM as F, FormError, expr_offset, fixed_size, parse_abbrev_table
from dbhive.dwarf.units import iter_unit_headers
from dbhive.elf import ElfFile
from dbhive.errors import InputError
from dbhive.leb128 import sleb128 as sleb, uleb128 as uleb

TAG_MEMBER, TAG_STRUCT, TAG_TYPEDEF = 0x0D, 0x13, 0x16
AT_NAME, AT_TYPE, AT_MEMBER_LOCATION = 0x03, 0x49, 0x38


class DwarfUnavailable(Exception):
    """No usable DWARF in this binary (the caller falls back to other sources)."""


def section_data(img: ElfFile, name: str) -> Optional[bytes]:
    try:
        return img.section_data(name)
    except InputError as e:
        raise DwarfUnavailable(str(e)) from None


class Unit:
    __slots__ = ("offset", "end", "version", "addr_size", "off_size", "abbrevs", "die_start")


class GoDwarf:
    def __init__(self, img: ElfFile):
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
        self._starts: Optional[List[int]] = None
        self._headers: list = []
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
        if self._starts is None:
            try:
                self._headers = list(iter_unit_headers(self.info, ".debug_info", 0,
                                                       endian=self.endian))
            except (FormError, struct.error, IndexError) as e:
                raise DwarfUnavailable(f"bad unit header ({e})") from None
            self._starts = [h.offset for h in self._headers]
        i = bisect.bisect_right(self._starts, pos) - 1
        if i < 0 or pos >= self._headers[i].end:
            raise DwarfUnavailable("offset outside every unit")
        h = self._headers[i]
        u = Unit()
        u.offset, u.end, u.version = h.offset, h.end, h.version
        u.addr_size, u.off_size, u.die_start = h.addr_size, h.off_size, h.die_offset
        if h.abbrev_offset not in self._abbrev_cache:
            self._abbrev_cache[h.abbrev_offset] = parse_abbrev_table(
                self.abbrev, h.abbrev_offset, len(self.abbrev))
        u.abbrevs = self._abbrev_cache[h.abbrev_offset]
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
