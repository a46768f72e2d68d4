"""Any ELF: sections, loadable segments, symbols and their file offsets, OpenSSL's version.

A small reader over the mapped file, written for speed (a tracer calls it per executable):
nothing is parsed until asked for.  File offsets are what uprobes want:
vaddr - segment vaddr + segment file offset, for the PT_LOAD that holds the vaddr.
"""
from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional

EM_X86_64 = 62
EM_AARCH64 = 183
EM_386 = 3
EM_ARM = 40
ARCH_NAMES = {EM_X86_64: "amd64", EM_AARCH64: "arm64", EM_386: "386", EM_ARM: "arm"}

PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
PF_X, PF_W = 1, 2
SHT_SYMTAB, SHT_DYNSYM, SHT_NOBITS = 2, 11, 8
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 1, 2, 4
ET_EXEC, ET_DYN = 2, 3
DT_FLAGS_1, DF_1_PIE = 0x6FFFFFFB, 0x08000000
DT_NEEDED, DT_STRTAB = 1, 5
STT_FUNC, STT_OBJECT = 2, 1



def string_offsets(table: bytes, name: str) -> list:
    """Offsets in a table of NUL-terminated strings at which `name` is a whole string."""
    needle = name.encode() + b"\0"
    out, start = [], 0
    while True:
        i = table.find(needle, start)
        if i < 0:
            return out
        if i == 0 or table[i - 1] == 0:
            out.append(i)
        start = i + 1

class ElfError(ValueError):
    """The file is not an ELF file this reader understands (one-line message)."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Symbol:
    name: str
    address: int
    size: int
    type: int       # STT_*
    table: str      # ".symtab" or ".dynsym"


class ElfImage:
    """One ELF file, mapped read-only."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as fh:
                try:
                    self.data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
                except ValueError:           # empty file
                    self.data = b""
        except OSError as exc:
            raise ElfError(f"{path}: cannot open: {exc.strerror}") from None
        d = self.data
        if len(d) < 52 or d[:4] != b"\x7fELF":
            raise ElfError(f"{path}: not an ELF file")
        if d[4] not in (1, 2) or d[5] not in (1, 2):
            raise ElfError(f"{path}: bad ELF class/data bytes")
        self.is64 = d[4] == 2
        self.ptr_size = 8 if self.is64 else 4
        self.endian = "<" if d[5] == 1 else ">"
        e = self.endian
        self.type, self.machine = struct.unpack_from(e + "HH", d, 16)
        try:
            if self.is64:
                (self.entry, phoff, shoff, _fl, _eh, phentsize, phnum, shentsize, shnum,
                 shstrndx) = struct.unpack_from(e + "QQQIHHHHHH", d, 24)
            else:
                (self.entry, phoff, shoff, _fl, _eh, phentsize, phnum, shentsize, shnum,
                 shstrndx) = struct.unpack_from(e + "IIIIHHHHHH", d, 24)
            self.segments = self._read_segments(phoff, phentsize, phnum)
            self.sections = self._read_sections(shoff, shentsize, shnum, shstrndx)
        except struct.error:
            raise ElfError(f"{path}: truncated or corrupt ELF headers") from None
        self._by_name = {}
        for s in self.sections:
            self._by_name.setdefault(s.name, s)
        self.loads = sorted((p for p in self.segments if p.type == PT_LOAD),
                            key=lambda p: p.vaddr)

    # --- headers -------------------------------------------------------------------------
    def _read_segments(self, off: int, entsize: int, num: int) -> List[Segment]:
        out = []
        e = self.endian
        for i in range(num):
            base = off + i * entsize
            if self.is64:
                typ, flags, offset, vaddr, _pa, filesz, memsz, _al = struct.unpack_from(
                    e + "IIQQQQQQ", self.data, base)
            else:
                typ, offset, vaddr, _pa, filesz, memsz, flags, _al = struct.unpack_from(
                    e + "IIIIIIII", self.data, base)
            out.append(Segment(typ, flags, offset, vaddr, filesz, memsz))
        return out

    def _read_sections(self, off: int, entsize: int, num: int, strndx: int) -> List[Section]:
        if off == 0 or num == 0:
            return []
        raw = []
        e = self.endian
        for i in range(num):
            base = off + i * entsize
            if self.is64:
                name, typ, flags, addr, offset, size, link, _inf, _al, ent = struct.unpack_from(
                    e + "IIQQQQIIQQ", self.data, base)
            else:
                name, typ, flags, addr, offset, size, link, _inf, _al, ent = struct.unpack_from(
                    e + "IIIIIIIIII", self.data, base)
            raw.append((name, typ, flags, addr, offset, size, link, ent))
        names_off = raw[strndx][4] if strndx < len(raw) else 0
        out = []
        for name, typ, flags, addr, offset, size, link, ent in raw:
            out.append(Section(self._cstr(names_off + name) if names_off else "", typ, flags,
                               addr, offset, size, link, ent))
        return out

    def _cstr(self, off: int) -> str:
        end = self.data.find(b"\0", off)
        return bytes(self.data[off:end if end >= 0 else len(self.data)]).decode("utf-8", "replace")

    # --- queries -------------------------------------------------------------------------
    @property
    def arch(self) -> str:
        return ARCH_NAMES.get(self.machine, f"machine-{self.machine}")

    @property
    def is_pie(self) -> bool:
        """ET_DYN executable (has an interpreter or the DF_1_PIE flag)."""
        if self.type != ET_DYN:
            return False
        if any(p.type == PT_INTERP for p in self.segments):
            return True
        return bool(self.dynamic_value(DT_FLAGS_1, 0) & DF_1_PIE)

    def section(self, name: str) -> Optional[Section]:
        return self._by_name.get(name)

    def section_bytes(self, sec: Section) -> memoryview:
        if sec.type == SHT_NOBITS:
            return memoryview(b"")
        return memoryview(self.data)[sec.offset:sec.offset + sec.size]

    def dynamic_value(self, tag: int, default: int) -> int:
        for t, v in self.dynamic_entries():
            if t == tag:
                return v
        return default

    def dynamic_entries(self) -> List[tuple]:
        out = []
        for p in self.segments:
            if p.type != PT_DYNAMIC:
                continue
            fmt = self.endian + ("qQ" if self.is64 else "iI")
            step = struct.calcsize(fmt)
            for off in range(p.offset, p.offset + p.filesz - step + 1, step):
                t, v = struct.unpack_from(fmt, self.data, off)
                if t == 0:
                    break
                out.append((t, v))
        return out

    def needed(self) -> List[str]:
        """DT_NEEDED library names."""
        entries = self.dynamic_entries()
        strtab = next((v for t, v in entries if t == DT_STRTAB), None)
        if strtab is None:
            return []
        base = self.file_offset(strtab)
        if base is None:
            return []
        return [self._cstr(base + v) for t, v in entries if t == DT_NEEDED]

    def segment_for_vaddr(self, vaddr: int) -> Optional[Segment]:
        for p in self.loads:
            if p.vaddr <= vaddr < p.vaddr + p.filesz:
                return p
        return None

    def file_offset(self, vaddr: int) -> Optional[int]:
        """File offset of a vaddr inside a PT_LOAD's file image, or None."""
        p = self.segment_for_vaddr(vaddr)
        return None if p is None else vaddr - p.vaddr + p.offset

    def read(self, vaddr: int, size: int) -> Optional[bytes]:
        """Bytes at a vaddr (from the file image; bss reads as zeros), or None if unmapped."""
        for p in self.loads:
            if p.vaddr <= vaddr and vaddr + size <= p.vaddr + p.memsz:
                start = vaddr - p.vaddr
                file_part = max(0, min(size, p.filesz - start))
                got = bytes(self.data[p.offset + start:p.offset + start + file_part])
                return got + b"\0" * (size - len(got))
        return None

    def read_ptr(self, vaddr: int) -> Optional[int]:
        raw = self.read(vaddr, self.ptr_size)
        if raw is None:
            return None
        return struct.unpack(self.endian + ("Q" if self.is64 else "I"), raw)[0]

    def symbols(self, names: Optional[Iterable[str]] = None,
                tables: Iterable[str] = (".symtab", ".dynsym")) -> Dict[str, Symbol]:
        """Defined symbols by name (first table wins).  With `names`, only those are decoded."""
        wanted = None if names is None else set(names)
        out: Dict[str, Symbol] = {}
        for tname in tables:
            sec = self.section(tname)
            if sec is None or sec.type not in (SHT_SYMTAB, SHT_DYNSYM) or sec.link >= len(self.sections):
                continue
            strtab = self.sections[sec.link]
            strdata = self.data[strtab.offset:strtab.offset + strtab.size]
            for name, sym in self._iter_symbols(sec, strdata, wanted):
                if name not in out and (wanted is None or name in wanted):
                    out[name] = sym
        return out

    def _iter_symbols(self, sec: Section, strdata: bytes, wanted):
        e = self.endian
        if self.is64:
            fmt, size = e + "IBBHQQ", 24
        else:
            fmt, size = e + "IIIBBH", 16
        raw = self.data[sec.offset:sec.offset + sec.size - sec.size % size]
        name_offs = None
        if wanted is not None:
            # Decode only entries whose name offset is one of the wanted names.
            name_offs = {i for n in wanted for i in string_offsets(strdata, n)}
            if not name_offs:
                return
        for ent in struct.iter_unpack(fmt, raw):
            if self.is64:
                st_name, info, _other, shndx, value, sz = ent
            else:
                st_name, value, sz, info, _other, shndx = ent
            if name_offs is not None and st_name not in name_offs:
                continue
            if shndx == 0 or st_name == 0:       # undefined
                continue
            end = strdata.find(b"\0", st_name)
            name = bytes(strdata[st_name:end]).decode("utf-8", "replace")
            yield name, Symbol(name, value, sz, info & 0xF, sec.name)


# --- any-ELF symbol report --------------------------------------------------------------------

def resolve_symbols(img: ElfImage, names: Iterable[str]) -> Dict[str, Optional[dict]]:
    """{name: {"address", "file_offset", "size", "table"} or None when absent}."""
    names = list(names)
    syms = img.symbols(names)
    out: Dict[str, Optional[dict]] = {}
    for n in names:
        s = syms.get(n)
        if s is None or s.address == 0:
            out[n] = None
            continue
        out[n] = {"address": s.address, "file_offset": img.file_offset(s.address),
                  "size": s.size, "table": s.table}
    return out


_OPENSSL_RE = re.compile(rb"OpenSSL (\d+\.\d+\.\d+[a-z]?)(?:[-+][\w.]+)? +\d{1,2} [A-Z][a-z]{2} \d{4}")
_OPENSSL_SONAME_RE = re.compile(rb"lib(?:ssl|crypto)\.so\.(\d+(?:\.\d+)*)")


def openssl_version(img: ElfImage) -> Optional[dict]:
    """OpenSSL's version as the library states it ("OpenSSL 3.0.17 1 Jul 2025").

    libssl keeps no version string of its own: then the libcrypto it needs (DT_NEEDED, same
    directory, which OpenSSL ships in lockstep) is read.  Returns {"version", "text",
    "source"} or None when there is no OpenSSL version string to be found.
    """
    found = _own_openssl_version(img)
    if found is not None:
        return found
    import os
    for lib in img.needed():
        if lib.startswith("libcrypto.so"):
            cand = os.path.join(os.path.dirname(os.path.realpath(img.path)), lib)
            try:
                found = _own_openssl_version(ElfImage(cand))
            except ElfError:
                continue
            if found is not None:
                found["source"] = f"version-string:{cand}"
                return found
    return None


def _own_openssl_version(img: ElfImage) -> Optional[dict]:
    for secname in (".rodata", ""):
        if secname:
            sec = img.section(secname)
            if sec is None:
                continue
            blob = img.section_bytes(sec)
        else:
            blob = img.data
        m = _OPENSSL_RE.search(blob)
        if m:
            return {"version": m.group(1).decode(), "text": m.group(0).decode(),
                    "source": "version-string"}
    return None


def has_openssl(img: ElfImage) -> bool:
    """The ELF defines OpenSSL's SSL_write (statically linked or libssl itself)."""
    return bool(img.symbols(["SSL_write", "SSL_read"]))
