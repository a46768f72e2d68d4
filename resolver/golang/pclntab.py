"""The Go pclntab: function table, names and sizes, for binaries with or without `.symtab`.

Header: magic (4 bytes), two zero bytes, instruction quantum, pointer size, then words.
  0xFFFFFFFB  Go 1.2-1.15  nfunc; functab of (entry, funcoff) pointer pairs follows at 8+ptr;
                           names and func records are offsets from the table start.
  0xFFFFFFFA  Go 1.16-1.17 words: nfunc nfiles funcnameOff cuOff filetabOff pctabOff pclnOff;
                           functab (at pclnOff) of (entry, funcoff) pointer pairs.
  0xFFFFFFF0  Go 1.18-1.19 words: nfunc nfiles textStart funcnameOff cuOff filetabOff pctabOff
  0xFFFFFFF1  Go 1.20+     pclnOff; functab of (entryoff, funcoff) uint32 pairs, entries
                           relative to textStart.
A function's size is the sum of the pc deltas of its pcsp table (the linker encodes each
table over exactly the function's bytes); the gap to the next entry is alignment padding.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, Optional, Tuple

from dbhive.elf import PF_X, ElfFile, find_all, string_offsets
from dbhive.errors import GoFormatError
from dbhive.leb128 import uleb128

MAGIC_12 = 0xFFFFFFFB
MAGIC_116 = 0xFFFFFFFA
MAGIC_118 = 0xFFFFFFF0
MAGIC_120 = 0xFFFFFFF1
MAGIC_GO_RANGE = {
    MAGIC_12: "go1.2-1.15",
    MAGIC_116: "go1.16-1.17",
    MAGIC_118: "go1.18-1.19",
    MAGIC_120: "go1.20+",
}
SECTION_NAMES = (".gopclntab", ".data.rel.ro.gopclntab")


class PclntabError(GoFormatError):
    """No usable pclntab (one-line message)."""


@dataclass(frozen=True)
class Func:
    name: str
    entry: int       # vaddr
    size: int        # bytes of code (without the alignment padding after it)


class Pclntab:
    def __init__(self, img: ElfFile, data: memoryview, vaddr: int, text_start: Optional[int]):
        self.img = img
        self.data = data
        self.vaddr = vaddr           # address of the table (moduledata points here)
        if len(data) < 16:
            raise PclntabError("pclntab truncated")
        endian = img.endian
        self.magic = struct.unpack_from(endian + "I", data, 0)[0]
        if self.magic not in MAGIC_GO_RANGE:
            raise PclntabError(f"unknown pclntab magic 0x{self.magic:08x}")
        if data[4] != 0 or data[5] != 0 or data[7] not in (4, 8):
            raise PclntabError(f"bad pclntab header (magic 0x{self.magic:08x})")
        self.quantum = data[6]
        self.ptr_size = data[7]
        self.endian = endian
        self._w = endian + ("Q" if self.ptr_size == 8 else "I")
        word = lambda i: struct.unpack_from(self._w, data, 8 + i * self.ptr_size)[0]
        self.nfunc = word(0)
        self.text_start = 0
        if self.magic in (MAGIC_118, MAGIC_120):
            self.text_start = word(2)
            if self.text_start == 0 and text_start is not None:
                # PIE: the word is filled by a dynamic relocation at load time.
                self.text_start = text_start
            self.funcname_off, self.pctab_off, self.functab_off = word(3), word(6), word(7)
            self._entry_fmt, self._entry_size = endian + "II", 8
        elif self.magic == MAGIC_116:
            self.funcname_off, self.pctab_off, self.functab_off = word(2), word(5), word(6)
            self._entry_fmt, self._entry_size = endian + ("QQ" if self.ptr_size == 8 else "II"), 2 * self.ptr_size
        else:
            self.funcname_off, self.pctab_off = 0, 0
            self.functab_off = 8 + self.ptr_size
            self._entry_fmt, self._entry_size = endian + ("QQ" if self.ptr_size == 8 else "II"), 2 * self.ptr_size
        end = self.functab_off + (self.nfunc + 1) * self._entry_size
        if self.nfunc <= 0 or end > len(data):
            raise PclntabError(f"pclntab function table out of bounds (magic 0x{self.magic:08x})")
        self._names: Optional[Dict[str, int]] = None

    @property
    def go_range(self) -> str:
        return MAGIC_GO_RANGE[self.magic]

    # --- raw table -----------------------------------------------------------------------
    def _entry(self, i: int) -> Tuple[int, int]:
        """(entry vaddr, offset of the func record in `data`) of function i."""
        e, foff = struct.unpack_from(self._entry_fmt, self.data, self.functab_off + i * self._entry_size)
        if self.magic in (MAGIC_118, MAGIC_120):
            e += self.text_start
        base = 0 if self.magic == MAGIC_12 else self.functab_off
        return e, base + foff

    def _name_at(self, func_off: int) -> str:
        name_off_pos = func_off + (4 if self.magic in (MAGIC_118, MAGIC_120) else self.ptr_size)
        nameoff = struct.unpack_from(self.endian + "i", self.data, name_off_pos)[0]
        start = self.funcname_off + nameoff
        end = bytes(self.data[start:start + 4096]).find(b"\0")
        return bytes(self.data[start:start + end]).decode("utf-8", "replace")

    def _size(self, i: int, entry: int, func_off: int) -> int:
        next_entry = self._entry(i + 1)[0]
        gap = next_entry - entry
        if self.magic == MAGIC_12:
            return gap
        rec = self.data
        base = func_off + (4 if self.magic in (MAGIC_118, MAGIC_120) else self.ptr_size)
        pcsp = struct.unpack_from(self.endian + "I", rec, base + 12)[0]
        if pcsp == 0:
            return gap
        pos = self.pctab_off + pcsp
        size, first = 0, True
        try:
            while True:
                uv, pos = uleb128(rec, pos)      # Go's uvarint
                if uv == 0 and not first:
                    break
                first = False
                delta, pos = uleb128(rec, pos)
                size += delta * self.quantum
        except (IndexError, ValueError):     # a malformed pc table: fall back to the gap
            return gap
        return size if 0 < size <= gap else gap

    # --- queries -------------------------------------------------------------------------
    def funcs(self) -> Iterator[Func]:
        for i in range(self.nfunc):
            entry, foff = self._entry(i)
            yield Func(self._name_at(foff), entry, self._size(i, entry, foff))

    def lookup(self, names: Iterable[str]) -> Dict[str, Func]:
        """Functions by exact name; names not in the table are left out."""
        wanted = set(names)
        # Find each wanted name's offset in the name table, then the records that use it.
        table = bytes(self.data[self.funcname_off:self.pctab_off]) if self.magic != MAGIC_12 else None
        offsets: Dict[int, str] = {}
        if table is not None:
            for n in wanted:
                offsets.update((i, n) for i in string_offsets(table, n))
            if not offsets:
                return {}
        out: Dict[str, Func] = {}
        name_field = 4 if self.magic in (MAGIC_118, MAGIC_120) else self.ptr_size
        unpack, fmt = struct.unpack_from, self.endian + "i"
        limit = len(self.data) - name_field - 16    # the record's name and pcsp fields fit
        for i in range(self.nfunc):
            entry, foff = self._entry(i)
            if not 0 <= foff <= limit:
                continue                # a func record outside the table: not a function
            if table is not None:
                name = offsets.get(unpack(fmt, self.data, foff + name_field)[0])
                if name is None:
                    continue
            else:
                name = self._name_at(foff)
                if name not in wanted:
                    continue
            if name not in out:
                out[name] = Func(name, entry, self._size(i, entry, foff))
        return out

    def func_at(self, pc: int) -> Optional[Func]:
        """The function containing pc (binary search)."""
        lo, hi = 0, self.nfunc
        if not self._entry(0)[0] <= pc < self._entry(self.nfunc)[0]:
            return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._entry(mid)[0] <= pc:
                lo = mid
            else:
                hi = mid
        entry, foff = self._entry(lo)
        return Func(self._name_at(foff), entry, self._size(lo, entry, foff))

    @property
    def text_end(self) -> int:
        return self._entry(self.nfunc)[0]


def _text_start_guess(img: ElfFile) -> Optional[int]:
    sec = img.section(".text")
    if sec is not None:
        return sec.addr
    for p in img.loads:
        if p.flags & 1:
            return p.vaddr
    return None


def find_pclntab(img: ElfFile) -> Pclntab:
    """The pclntab by section name, or by scanning the read-only segments for its header."""
    text_start = _text_start_guess(img)
    for name in SECTION_NAMES:
        sec = img.section(name)
        if sec is not None and sec.size:
            return Pclntab(img, img.section_bytes(sec), sec.addr, text_start)
    # No section header: scan loaded, non-executable segments for a header that parses.
    magics = [struct.pack(img.endian + "I", m) + b"\0\0" for m in MAGIC_GO_RANGE]
    last_error = None
    for p in img.loads:
        if p.flags & PF_X:
            continue
        seg = img.segment_bytes(p)
        raw = bytes(seg)
        for needle in magics:
            for i in find_all(raw, needle, 4):
                if i + 8 > len(raw) or raw[i + 7] != img.ptr_size or raw[i + 6] not in (1, 2, 4):
                    continue
                try:
                    tab = Pclntab(img, seg[i:], p.vaddr + i, text_start)
                    first = tab._entry(0)[0]
                    if text_start is not None and not (text_start <= first < text_start + (1 << 30)):
                        continue
                    if not tab._name_at(tab._entry(0)[1]):
                        continue
                    return tab
                except (PclntabError, struct.error, IndexError) as exc:
                    last_error = exc
    sec = img.section(".gopclntab")
    if last_error:
        raise PclntabError(str(last_error))
    raise PclntabError("no Go pclntab found (not a Go binary?)")


def has_name_prefix(tab: Pclntab, prefixes: Iterable[str]) -> bool:
    """Some function name starts with one of the prefixes (a search of the name table)."""
    if tab.magic == MAGIC_12:
        return any(f.name.startswith(tuple(prefixes)) for f in tab.funcs())
    table = bytes(tab.data[tab.funcname_off:tab.pctab_off])
    for p in prefixes:
        if table.startswith(p.encode()) or table.find(b"\0" + p.encode()) >= 0:
            return True
    return False
