"""DWARF unit headers (.debug_info / .debug_types, versions 2-5) and the file-name table of
line-program headers (.debug_line, versions 2-5), needed for DW_AT_decl_file."""
from __future__ import annotations

import os
import struct
from typing import Optional

from .forms import FormError, sleb, uleb

DW_UT_compile, DW_UT_type, DW_UT_partial, DW_UT_skeleton = 1, 2, 3, 4
DW_UT_split_compile, DW_UT_split_type = 5, 6


class Unit:
    """One unit header plus the per-unit state the decoders read (`base`, `space`,
    string-offsets base).  `offset`/`end`/`die_offset` are offsets in the section bytes;
    `base` is `offset` moved into the reader's virtual offset space."""
    __slots__ = ("sec", "space", "offset", "end", "die_offset", "version", "unit_type",
                 "addr_size", "off_size", "abbrev_offset", "type_sig", "type_offset",
                 "base", "name", "comp_dir", "stmt_list", "str_offsets_base", "files",
                 "file", "index", "sc")

    def __repr__(self):
        return f"<Unit {self.sec}+0x{self.offset:x} v{self.version} {self.name!r}>"


def iter_unit_headers(d, sec: str, space: int, is_types: bool = False, endian: str = "<"):
    """Yield a Unit for every unit header in section bytes `d` (`endian`: "<" or ">")."""
    o = 0
    n = len(d)
    while o < n:
        u = Unit()
        u.sec, u.space, u.offset = sec, space, o
        if o + 11 > n:
            raise FormError("truncated unit header", o)
        length, = struct.unpack_from(endian + "I", d, o)
        if length == 0xFFFFFFFF:
            length, = struct.unpack_from(endian + "Q", d, o + 4)
            u.off_size, p = 8, o + 12
        elif length >= 0xFFFFFFF0:
            raise FormError(f"reserved unit length 0x{length:x}", o)
        else:
            u.off_size, p = 4, o + 4
        u.end = p + length
        if u.end > n:
            raise FormError("unit runs past the end of the section", o)
        u.version, = struct.unpack_from(endian + "H", d, p)
        p += 2
        osz = endian + ("I" if u.off_size == 4 else "Q")
        u.type_sig = u.type_offset = None
        if u.version >= 5:
            u.unit_type, u.addr_size = d[p], d[p + 1]
            u.abbrev_offset, = struct.unpack_from(osz, d, p + 2)
            p += 2 + u.off_size
            if u.unit_type in (DW_UT_skeleton, DW_UT_split_compile):
                p += 8
            elif u.unit_type in (DW_UT_type, DW_UT_split_type):
                u.type_sig, = struct.unpack_from(endian + "Q", d, p)
                u.type_offset, = struct.unpack_from(osz, d, p + 8)
                p += 8 + u.off_size
        elif 2 <= u.version <= 4:
            u.abbrev_offset, = struct.unpack_from(osz, d, p)
            u.addr_size = d[p + u.off_size]
            p += u.off_size + 1
            u.unit_type = DW_UT_compile
            if is_types:
                u.unit_type = DW_UT_type
                u.type_sig, = struct.unpack_from(endian + "Q", d, p)
                u.type_offset, = struct.unpack_from(osz, d, p + 8)
                p += 8 + u.off_size
        else:
            raise FormError(f"unsupported DWARF version {u.version}", o)
        if u.addr_size not in (4, 8):
            raise FormError(f"unsupported address size {u.addr_size}", o)
        if p > u.end:
            raise FormError("unit header longer than the unit", o)
        u.die_offset = p
        u.base = space + o
        u.name = u.comp_dir = u.stmt_list = None
        u.str_offsets_base = None
        u.files = None
        yield u
        o = u.end


# ---------------------------------------------------------------------------
# line program header: file names

def _read_form(d, o, form, off_size, strings):
    """Value of one line-header entry field.  Strings resolve through `strings`."""
    if form == 0x08:                                   # string
        e = d.index(0, o)
        return d[o:e].decode("utf-8", "replace"), e + 1
    if form == 0x1f:                                   # line_strp
        v = int.from_bytes(d[o:o + off_size], "little")
        return strings("line", v), o + off_size
    if form == 0x0e:                                   # strp
        v = int.from_bytes(d[o:o + off_size], "little")
        return strings("str", v), o + off_size
    if form == 0x0f:                                   # udata
        return uleb(d, o)
    if form == 0x0d:
        return sleb(d, o)
    size = {0x0b: 1, 0x05: 2, 0x06: 4, 0x07: 8, 0x1e: 16, 0x17: off_size}.get(form)
    if size is not None:
        return int.from_bytes(d[o:o + size], "little"), o + size
    if form == 0x09:                                   # block
        n, o = uleb(d, o)
        return None, o + n
    raise FormError(f"unsupported form 0x{form:x} in a line-table header", o)


def line_file_names(d, o: int, comp_dir: Optional[str], strings) -> list:
    """File names of the line program at offset `o` of .debug_line bytes `d`, indexed as
    DW_AT_decl_file indexes them (entry 0 is the primary file in DWARF 5, a placeholder
    before).  Paths are made relative to the compilation directory where possible."""
    start = o
    length, = struct.unpack_from("<I", d, o)
    off_size = 4
    o += 4
    if length == 0xFFFFFFFF:
        length, = struct.unpack_from("<Q", d, o)
        off_size = 8
        o += 8
    version, = struct.unpack_from("<H", d, o)
    o += 2
    if version >= 5:
        o += 2                                          # address_size, seg_sel_size
    o += off_size                                       # header_length
    o += 1                                              # minimum_instruction_length
    if version >= 4:
        o += 1                                          # maximum_operations_per_instruction
    o += 3                                              # default_is_stmt, line_base, line_range
    opcode_base = d[o]
    o += opcode_base                                    # opcode_base + standard_opcode_lengths
    dirs: list = []
    files: list = []
    if version >= 5:
        for table, is_dir in ((dirs, True), (files, False)):
            nfmt = d[o]
            o += 1
            fmts = []
            for _ in range(nfmt):
                ct, o = uleb(d, o)
                form, o = uleb(d, o)
                fmts.append((ct, form))
            count, o = uleb(d, o)
            if count > len(d) - o or (count and not fmts):
                raise FormError("bad entry count in a line-table header", o)
            for _ in range(count):
                path, dir_index = None, 0
                for ct, form in fmts:
                    if ct == 1 and form == 0x1f:                 # path: line_strp
                        path = strings("line", int.from_bytes(d[o:o + off_size], "little"))
                        o += off_size
                    elif ct == 2 and form == 0x0f:               # directory index: udata
                        dir_index = d[o]
                        if dir_index < 0x80:
                            o += 1
                        else:
                            dir_index, o = uleb(d, o)
                    else:
                        v, o = _read_form(d, o, form, off_size, strings)
                        if ct == 1:
                            path = v
                        elif ct == 2:
                            dir_index = v
                table.append(path if is_dir else (path, dir_index))
    elif 2 <= version <= 4:
        dirs.append(comp_dir or "")
        while d[o]:
            e = d.index(0, o)
            dirs.append(d[o:e].decode("utf-8", "replace"))
            o = e + 1
        o += 1
        files.append((None, 0))
        while d[o]:
            e = d.index(0, o)
            name = d[o:e].decode("utf-8", "replace")
            o = e + 1
            dir_index, o = uleb(d, o)
            _, o = uleb(d, o)
            _, o = uleb(d, o)
            files.append((name, dir_index))
    else:
        raise FormError(f"unsupported line table version {version}", start)
    return FileNames(files, dirs, comp_dir)


class FileNames:
    """decl_file index -> path, joined and cleaned on first use (a unit's functions use
    only a few of the hundreds of files its line table lists)."""

    def __init__(self, files, dirs, comp_dir):
        self.files, self.dirs, self.comp_dir = files, dirs, comp_dir
        self.done: dict = {}

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        p = self.done.get(i)
        if p is None and i not in self.done:
            name, dir_index = self.files[i]
            if name is not None:
                dirs = self.dirs
                directory = dirs[dir_index] if 0 <= dir_index < len(dirs) else ""
                p = _clean_path(directory or "", name, self.comp_dir)
            self.done[i] = p
        return p


# (directory, name, comp_dir) -> path: the units of a kernel and its modules name the same
# headers thousands of times
_clean_paths: dict = {}


def _clean_path(directory: str, name: str, comp_dir: Optional[str]) -> str:
    key = (directory, name, comp_dir)
    p = _clean_paths.get(key)
    if p is None:
        p = os.path.join(directory, name)
        if comp_dir and os.path.isabs(p):
            cd = comp_dir.rstrip("/") + "/"
            if p.startswith(cd):
                p = p[len(cd):]
        p = os.path.normpath(p) if p else p
        if len(_clean_paths) < 200_000:
            _clean_paths[key] = p
    return p
