"""The one ELF layer.  Every reader of ELF files — kernel identity, the BTF and DWARF readers,
kernel modules, the Go analyser, `resolver elf` — goes through `ElfFile`.

A small reader over the memory-mapped file: the headers are read on open, everything else
(symbols, notes, section contents) only when asked for.  It is hand-written rather than
pyelftools because the tracer analyses one executable per new process and the Go report must
stay within milliseconds (pyelftools' per-record parsing was measured at 5-20x slower on
symbol tables); one reader serves every job, so there is one place that bounds reads.

Every offset and size taken from the file is checked against the file's size before use:
a damaged or hostile file gives an `ElfError` naming it, never an unbounded read.

Also here: the ELF note format (`parse_notes`, also used for /sys/kernel/notes, a bare
sequence of notes), compressed sections (SHF_COMPRESSED zlib, and the older `.zdebug_*`), and
the absolute relocations that relocatable objects (kernel modules) need applied to their
debug sections.
"""
from __future__ import annotations

import mmap
import os
import stat
import struct
import sys
import zlib
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional

from . import quirks
from .dwarf import c_enabled
from .errors import ElfError, InputError

if c_enabled():                # relocated_section's and func_symbol_names' loops in C
    from .dwarf._cscan import apply_abs_relocs as _c_relocs
    from .dwarf._cscan import func_symbol_names as _c_func_symbol_names
else:
    _c_relocs = _c_func_symbol_names = None

ELF_MAGIC = b"\x7fELF"

# e_type
ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
ELF_TYPE_NAMES = {ET_REL: "REL", ET_EXEC: "EXEC", ET_DYN: "DYN", ET_CORE: "CORE"}

# e_machine
EM_386, EM_MIPS, EM_PPC, EM_PPC64, EM_S390, EM_ARM = 3, 8, 20, 21, 22, 40
EM_SPARCV9, EM_X86_64, EM_AARCH64, EM_RISCV, EM_LOONGARCH = 43, 62, 183, 243, 258

# section types and flags
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOTE = 1, 2, 3, 4, 7
SHT_NOBITS, SHT_REL, SHT_DYNSYM = 8, 9, 11
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_COMPRESSED = 0x1, 0x2, 0x4, 0x800
SHN_UNDEF, SHN_LORESERVE, SHN_XINDEX = 0, 0xFF00, 0xFFFF

# segment types and flags
PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE = 1, 2, 3, 4
PF_X, PF_W, PF_R = 1, 2, 4

# symbols, dynamic entries, notes, compression
STT_OBJECT, STT_FUNC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB, DT_FLAGS_1 = 0, 1, 5, 0x6FFFFFFB
DF_1_PIE = 0x08000000
NT_GNU_BUILD_ID = 3
ELFCOMPRESS_ZLIB, ELFCOMPRESS_ZSTD = 1, 2

# a decompressed section larger than this is refused (a compression bomb, not debug info)
MAX_DECOMPRESSED = 8 << 30
# symbol and string tables larger than this are refused (vmlinux: 3 MB; the largest real
# executables: ~100 MB)
MAX_SYMBOL_TABLE = 256 << 20

# e_machine -> the `uname -m` spelling.  Keyed by (e_machine, 64-bit, little-endian) because a
# few machines are spelled differently by word size or byte order.
_UNAME_M = {
    (EM_X86_64, True, True): "x86_64",
    (EM_386, False, True): "i686",
    (EM_AARCH64, True, True): "aarch64",
    (EM_AARCH64, True, False): "aarch64_be",
    (EM_ARM, False, True): "armv7l",
    (EM_PPC64, True, True): "ppc64le",
    (EM_PPC64, True, False): "ppc64",
    (EM_PPC, False, False): "ppc",
    (EM_S390, True, False): "s390x",
    (EM_S390, False, False): "s390",
    (EM_RISCV, True, True): "riscv64",
    (EM_RISCV, False, True): "riscv32",
    (EM_LOONGARCH, True, True): "loongarch64",
    (EM_MIPS, True, True): "mips64",
    (EM_MIPS, True, False): "mips64",
    (EM_MIPS, False, True): "mips",
    (EM_MIPS, False, False): "mips",
    (EM_SPARCV9, True, False): "sparc64",
}
# e_machine -> GOARCH spelling (the Go analyser's reports)
GO_ARCH = {EM_X86_64: "amd64", EM_AARCH64: "arm64", EM_386: "386", EM_ARM: "arm"}

# Relocation types that store S + A (symbol value plus addend) in a debug section, by
# machine: {type: width in bytes}.  Debug sections of relocatable objects only need these.
ABS_RELOCS = {
    EM_X86_64: {1: 8, 10: 4, 11: 4},            # R_X86_64_64, _32, _32S
    EM_AARCH64: {257: 8, 258: 4},               # R_AARCH64_ABS64, _ABS32
    EM_386: {1: 4},                             # R_386_32
    EM_ARM: {2: 4},                             # R_ARM_ABS32
    EM_RISCV: {1: 4, 2: 8},                     # R_RISCV_32, _64
    EM_PPC64: {1: 4, 38: 8},                    # R_PPC64_ADDR32, _ADDR64
    EM_S390: {4: 4, 22: 8},                     # R_390_32, _64
}


class Section(NamedTuple):
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


class Segment(NamedTuple):
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


class Symbol(NamedTuple):
    name: str
    address: int        # st_value
    size: int
    type: int           # STT_*
    shndx: int
    table: str          # ".symtab" or ".dynsym"


class Note(NamedTuple):
    name: bytes     # owner, without the trailing NUL (b"GNU", b"Linux", b"Xen")
    type: int
    desc: bytes


def file_starts_with(path: str, magic: bytes) -> bool:
    """Whether `path` can be read and begins with `magic` (False for anything unreadable)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False


def is_elf(path: str) -> bool:
    return file_starts_with(path, ELF_MAGIC)


def open_regular(path: str, what: str = "file"):
    """Open `path` for reading if it is a regular file (symlinks followed); InputError for a
    missing file, a directory, a FIFO, a device or a socket — never a blocking open."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise InputError(f"{path}: is {kind}, not a regular {what}")
    try:
        return open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror}") from None


class ElfFile:
    """One ELF file, mapped read-only.  Use as a context manager or call `close()`."""

    def __init__(self, path: str):
        self.path = path
        fh = open_regular(path, "ELF file")
        size = os.fstat(fh.fileno()).st_size
        try:
            if size < 52:
                raise ElfError(f"{path}: not an ELF file (not a valid ELF header: {size} bytes)")
            try:
                self.data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            except (ValueError, OSError) as e:
                raise ElfError(f"{path}: cannot map the file ({e})") from None
        except BaseException:
            fh.close()
            raise
        self._fh = fh           # whole sections are copied out with pread, not through the map
        self.size = len(self.data)
        d = self.data
        if d[:4] != ELF_MAGIC:
            raise ElfError(f"{path}: not an ELF file (not a valid ELF header)")
        if d[4] not in (1, 2) or d[5] not in (1, 2):
            raise ElfError(f"{path}: bad ELF class/data bytes ({d[4]}, {d[5]})")
        self.is64 = d[4] == 2
        self.little_endian = d[5] == 1
        self.endian = "<" if self.little_endian else ">"
        self.ptr_size = 8 if self.is64 else 4
        e = self.endian
        try:
            self.type, self.machine = struct.unpack_from(e + "HH", d, 16)
            if self.is64:
                (self.entry, phoff, shoff, _fl, _eh, phentsize, phnum, shentsize, shnum,
                 shstrndx) = struct.unpack_from(e + "QQQIHHHHHH", d, 24)
            else:
                (self.entry, phoff, shoff, _fl, _eh, phentsize, phnum, shentsize, shnum,
                 shstrndx) = struct.unpack_from(e + "IIIIHHHHHH", d, 24)
        except struct.error:
            raise ElfError(f"{path}: truncated ELF header") from None
        self.segments = self._read_segments(phoff, phentsize, phnum)
        self.sections = self._read_sections(shoff, shentsize, shnum, shstrndx)
        self._by_name: Dict[str, Section] = {}
        for s in self.sections:
            self._by_name.setdefault(s.name, s)
        self.loads = sorted((p for p in self.segments if p.type == PT_LOAD),
                            key=lambda p: p.vaddr)

    def close(self) -> None:
        if isinstance(self.data, mmap.mmap) and not self.data.closed:
            try:
                self.data.close()
            except BufferError:       # a memoryview into the map is still alive
                pass
        self._fh.close()

    def __enter__(self) -> "ElfFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- headers -------------------------------------------------------------------------
    def _table(self, off: int, entsize: int, num: int, min_entsize: int, what: str) -> None:
        """Check that a header table lies inside the file."""
        if num and (entsize < min_entsize or off + entsize * num > self.size):
            raise ElfError(f"{self.path}: truncated or corrupt ELF file ({what} table at "
                           f"{off}, {num} entries of {entsize} bytes; the file has "
                           f"{self.size} bytes)")

    def _read_segments(self, off: int, entsize: int, num: int) -> List[Segment]:
        if off == 0:
            return []
        self._table(off, entsize, num, 56 if self.is64 else 32, "program header")
        out = []
        e, d = self.endian, self.data
        for i in range(num):
            base = off + i * entsize
            if self.is64:
                typ, flags, offset, vaddr, _pa, filesz, memsz, _al = struct.unpack_from(
                    e + "IIQQQQQQ", d, base)
            else:
                typ, offset, vaddr, _pa, filesz, memsz, flags, _al = struct.unpack_from(
                    e + "IIIIIIII", d, base)
            out.append(Segment(typ, flags, offset, vaddr, filesz, memsz))
        return out

    def _read_sections(self, off: int, entsize: int, num: int, strndx: int) -> List[Section]:
        if off == 0:
            return []
        e, d = self.endian, self.data
        fmt = e + ("IIQQQQIIQQ" if self.is64 else "IIIIIIIIII")
        min_entsize = struct.calcsize(fmt)
        if num == 0 or strndx == SHN_XINDEX:
            # extended numbering: the real counts are in section 0's size / link fields
            self._table(off, entsize, 1, min_entsize, "section header")
            sec0 = struct.unpack_from(fmt, d, off)
            num = num or sec0[5]
            if strndx == SHN_XINDEX:
                strndx = sec0[6]
        self._table(off, entsize, num, min_entsize, "section header")
        raw = [struct.unpack_from(fmt, d, off + i * entsize) for i in range(num)]
        names_off = names_end = 0
        if 0 < strndx < len(raw):
            names_off = raw[strndx][4]
            names_end = min(self.size, names_off + raw[strndx][5])
        out = []
        for i, (name, typ, flags, addr, offset, size, link, info, _al, ent) in enumerate(raw):
            text = self._cstr(names_off + name, names_end) if names_off else ""
            out.append(Section(i, text, typ, flags, addr, offset, size, link, info, ent))
        return out

    def _cstr(self, off: int, end: Optional[int] = None) -> str:
        end = self.size if end is None else end
        if not 0 <= off < end:
            return ""
        stop = self.data.find(b"\0", off, end)
        return bytes(self.data[off:stop if stop >= 0 else end]).decode("utf-8", "replace")

    # --- identity --------------------------------------------------------------------------
    @property
    def elf_type(self) -> str:
        """'EXEC', 'DYN', 'REL', 'CORE' (or the number)."""
        return ELF_TYPE_NAMES.get(self.type, str(self.type))

    @property
    def uname_machine(self) -> str:
        """The `uname -m` spelling of the machine ('' if unknown)."""
        return _UNAME_M.get((self.machine, self.is64, self.little_endian), "")

    @property
    def arch(self) -> str:
        """The GOARCH spelling of the machine (amd64, arm64, ...)."""
        return GO_ARCH.get(self.machine, f"machine-{self.machine}")

    @property
    def is_pie(self) -> bool:
        """ET_DYN executable (has an interpreter or the DF_1_PIE flag)."""
        if self.type != ET_DYN:
            return False
        if any(p.type == PT_INTERP for p in self.segments):
            return True
        return bool(self.dynamic_value(DT_FLAGS_1, 0) & DF_1_PIE)

    def notes(self) -> List[Note]:
        """The notes of the SHT_NOTE sections, else of the PT_NOTE segments."""
        areas = [self.section_bytes(s) for s in self.sections if s.type == SHT_NOTE]
        if not areas:
            areas = [self._slice(p.offset, p.filesz, "PT_NOTE segment")
                     for p in self.segments if p.type == PT_NOTE]
        out: List[Note] = []
        for a in areas:
            out.extend(parse_notes(bytes(a), self.little_endian))
        return out

    @property
    def build_id(self) -> str:
        """The NT_GNU_BUILD_ID note as lowercase hex ('' if the file has none).  Only notes
        owned by "GNU" count: the kernel's Xen notes reuse type number 3."""
        return build_id_from_notes_list(self.notes())

    # --- sections --------------------------------------------------------------------------
    def section(self, name: str) -> Optional[Section]:
        return self._by_name.get(name)

    def has_section(self, name: str) -> bool:
        return name in self._by_name

    def _slice(self, offset: int, size: int, what: str) -> memoryview:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(f"{self.path}: truncated ELF file ({what} at {offset}+{size} "
                           f"runs past the end, {self.size} bytes)")
        return memoryview(self.data)[offset:offset + size]

    def _copy(self, offset: int, size: int, what: str) -> bytes:
        """`size` bytes at `offset`, read with pread: a whole debug section copied through
        the map would also stay resident as mapped pages (twice the memory)."""
        self._slice(offset, size, what)            # bounds check
        data = os.pread(self._fh.fileno(), size, offset)
        if len(data) != size:
            raise ElfError(f"{self.path}: truncated ELF file ({what} cut short)")
        return data

    def section_bytes(self, sec: Section) -> memoryview:
        """The raw bytes of a section as stored (empty for SHT_NOBITS)."""
        if sec.type == SHT_NOBITS:
            return memoryview(b"")
        return self._slice(sec.offset, sec.size, f"section {sec.name}")

    def section_data(self, name: str, max_bytes: Optional[int] = None) -> Optional[bytes]:
        """The contents of section `name`, decompressed (SHF_COMPRESSED, or the older
        `.zdebug_*` spelling of a `.debug_*` section); None if there is no such section.
        ElfError if it has no data in this file (SHT_NOBITS, as in `objcopy
        --only-keep-debug` output), is cut short, does not decompress, or is larger than
        `max_bytes`."""
        sec = self.section(name)
        if sec is not None:
            if sec.type == SHT_NOBITS:
                raise ElfError(f"{self.path}: section {name} has no data in this file "
                               f"(SHT_NOBITS)")
            if sec.flags & SHF_COMPRESSED:
                return self._decompress_chdr(self.section_bytes(sec), name, max_bytes)
            if max_bytes is not None and sec.size > max_bytes:
                raise ElfError(f"{self.path}: section {name} is {sec.size} bytes, more than "
                               f"the limit of {max_bytes}")
            return self._copy(sec.offset, sec.size, f"section {name}")
        if name.startswith(".debug_"):
            zsec = self.section(".z" + name[1:])
            if zsec is not None and zsec.type != SHT_NOBITS:
                return self._decompress_zdebug(self.section_bytes(zsec), zsec.name, max_bytes)
        return None

    def _decompress_chdr(self, raw: memoryview, name: str, max_bytes: Optional[int]) -> bytes:
        e = self.endian
        hdr = 24 if self.is64 else 12
        if len(raw) < hdr:
            raise ElfError(f"{self.path}: section {name}: truncated compression header")
        if self.is64:
            ch_type, _res, ch_size, _al = struct.unpack_from(e + "IIQQ", raw, 0)
        else:
            ch_type, ch_size, _al = struct.unpack_from(e + "III", raw, 0)
        if ch_type == ELFCOMPRESS_ZSTD:
            raise ElfError(f"{self.path}: section {name} is zstd-compressed, which this "
                           f"reader does not support (decompress it with `objcopy "
                           f"--decompress-debug-sections`)")
        if ch_type != ELFCOMPRESS_ZLIB:
            raise ElfError(f"{self.path}: section {name}: unknown compression type {ch_type}")
        return self._inflate(raw[hdr:], ch_size, name, max_bytes)

    def _decompress_zdebug(self, raw: memoryview, name: str, max_bytes: Optional[int]) -> bytes:
        if len(raw) < 12 or bytes(raw[:4]) != b"ZLIB":
            raise ElfError(f"{self.path}: section {name}: bad .zdebug header")
        (size,) = struct.unpack_from(">Q", raw, 4)
        return self._inflate(raw[12:], size, name, max_bytes)

    def _inflate(self, raw: memoryview, size: int, name: str, max_bytes: Optional[int]) -> bytes:
        cap = MAX_DECOMPRESSED if max_bytes is None else min(max_bytes, MAX_DECOMPRESSED)
        if size > cap:
            raise ElfError(f"{self.path}: section {name} claims {size} bytes uncompressed "
                           f"(more than the limit of {cap}): refused")
        d = zlib.decompressobj()
        try:
            out = d.decompress(raw, size + 1)
        except zlib.error as exc:
            raise ElfError(f"{self.path}: section {name}: bad compressed data ({exc})") from None
        if len(out) != size:
            raise ElfError(f"{self.path}: section {name}: decompresses to {len(out)} bytes, "
                           f"the header says {size}")
        return out

    def relocated_section(self, name: str) -> Optional[bytes]:
        """`section_data(name)` with the relocations of `.rela<name>` / `.rel<name>` applied
        (relocatable objects: a .ko's debug sections hold addends of relocations against
        section symbols, not final values).  Only absolute relocations (S + A) occur there;
        any other type is an error."""
        data = self.section_data(name)
        if data is None or not quirks.needs_debug_relocations(self.type):
            return data
        base = name if self.section(name) is not None else ".z" + name[1:]
        rel = self.section(".rela" + base) or self.section(".rel" + base)
        if rel is None:
            return data
        widths = ABS_RELOCS.get(self.machine)
        if widths is None:
            raise ElfError(f"{self.path}: relocations of machine {self.machine} are not "
                           f"supported (in {rel.name})")
        if rel.link >= len(self.sections):
            raise ElfError(f"{self.path}: {rel.name} names a missing symbol table")
        values = self._symbol_values(self.sections[rel.link])
        e = self.endian
        is_rela = rel.type == SHT_RELA
        if self.is64:
            fmt = e + ("QQq" if is_rela else "QQ")
        else:
            fmt = e + ("IIi" if is_rela else "II")
        entsize = struct.calcsize(fmt)
        raw = self.section_bytes(rel)
        raw = raw[:len(raw) - len(raw) % entsize]
        out = bytearray(data)
        if _c_relocs is not None:              # the same loop in C (dwarf/_cscan.c)
            bad = _c_relocs(out, raw, self.is64, is_rela, self.little_endian, widths, values)
            if bad is not None:
                raise ElfError(f"{self.path}: unsupported or out-of-range relocation (type "
                               f"{bad[0]}) at offset {bad[1]} of {rel.name}")
            return bytes(out)
        n = len(out)
        byteorder = "little" if self.little_endian else "big"
        # the entries' fields as lists (a .ko's .rela.debug_info has ~10^5 entries: one
        # struct unpack per entry was most of the time)
        step = len(fmt) - 1
        if (e == "<") == (sys.byteorder == "little"):
            words = memoryview(raw).cast("Q" if self.is64 else "I")
            r_offsets, r_infos = words[0::step].tolist(), words[1::step].tolist()
            if is_rela:
                addends = memoryview(raw).cast("q" if self.is64 else "i")[2::step].tolist()
        else:
            ents = list(struct.iter_unpack(fmt, raw))
            r_offsets, r_infos = [x[0] for x in ents], [x[1] for x in ents]
            if is_rela:
                addends = [x[2] for x in ents]
        if not is_rela:
            addends = [None] * len(r_offsets)
        shift, tmask = (32, 0xFFFFFFFF) if self.is64 else (8, 0xFF)
        packers = {w: struct.Struct(e + {4: "I", 8: "Q"}[w]).pack_into
                   for w in set(widths.values())}
        masks = {w: (1 << (8 * w)) - 1 for w in packers}
        nsym = len(values)
        for r_offset, r_info, addend in zip(r_offsets, r_infos, addends):
            rtype = r_info & tmask
            if rtype == 0:
                continue
            sym = r_info >> shift
            width = widths.get(rtype)
            if width is None or sym >= nsym or r_offset + width > n:
                raise ElfError(f"{self.path}: unsupported or out-of-range relocation (type "
                               f"{rtype}) at offset {r_offset} of {rel.name}")
            if addend is None:
                addend = int.from_bytes(out[r_offset:r_offset + width], byteorder)
            packers[width](out, r_offset, (values[sym] + addend) & masks[width])
        return bytes(out)

    # --- segments and addresses ------------------------------------------------------------
    def segment_for_vaddr(self, vaddr: int) -> Optional[Segment]:
        for p in self.loads:
            if p.vaddr <= vaddr < p.vaddr + p.filesz:
                return p
        return None

    def file_offset(self, vaddr: int) -> Optional[int]:
        """File offset of a vaddr inside a PT_LOAD's file image, or None (what uprobes want:
        vaddr - segment vaddr + segment file offset)."""
        p = self.segment_for_vaddr(vaddr)
        return None if p is None else vaddr - p.vaddr + p.offset

    def read(self, vaddr: int, size: int) -> Optional[bytes]:
        """Bytes at a vaddr (from the file image; bss reads as zeros), or None if unmapped
        or past the end of the file."""
        if size < 0:
            return None
        for p in self.loads:
            if p.vaddr <= vaddr and vaddr + size <= p.vaddr + p.memsz:
                start = vaddr - p.vaddr
                file_part = max(0, min(size, p.filesz - start))
                lo = p.offset + start
                if lo + file_part > self.size:
                    return None
                got = bytes(self.data[lo:lo + file_part])
                return got + b"\0" * (size - len(got))
        return None

    def read_ptr(self, vaddr: int) -> Optional[int]:
        raw = self.read(vaddr, self.ptr_size)
        if raw is None:
            return None
        return struct.unpack(self.endian + ("Q" if self.is64 else "I"), raw)[0]

    def segment_bytes(self, seg: Segment) -> memoryview:
        return self._slice(seg.offset, seg.filesz, "segment")

    def dynamic_value(self, tag: int, default: int) -> int:
        for t, v in self.dynamic_entries():
            if t == tag:
                return v
        return default

    def dynamic_entries(self) -> List[tuple]:
        out = []
        fmt = self.endian + ("qQ" if self.is64 else "iI")
        step = struct.calcsize(fmt)
        for p in self.segments:
            if p.type != PT_DYNAMIC:
                continue
            raw = self._slice(p.offset, p.filesz - p.filesz % step, "PT_DYNAMIC")
            for t, v in struct.iter_unpack(fmt, raw):
                if t == DT_NULL:
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

    # --- symbols ---------------------------------------------------------------------------
    def _symtab_layout(self):
        return (self.endian + "IBBHQQ", 24) if self.is64 else (self.endian + "IIIBBH", 16)

    def _table_bytes(self, sec: Section) -> memoryview:
        if sec.size > MAX_SYMBOL_TABLE:
            raise ElfError(f"{self.path}: {sec.name or 'a symbol table'} is {sec.size} bytes, "
                           f"more than the limit of {MAX_SYMBOL_TABLE}")
        return self.section_bytes(sec)

    def _raw_symbols(self, sec: Section) -> Iterator[tuple]:
        """(st_name, info, shndx, value, size) of every entry of a symbol table."""
        fmt, size = self._symtab_layout()
        raw = self._table_bytes(sec)
        raw = raw[:len(raw) - len(raw) % size]
        if self.is64:
            for st_name, info, _other, shndx, value, sz in struct.iter_unpack(fmt, raw):
                yield st_name, info, shndx, value, sz
        else:
            for st_name, value, sz, info, _other, shndx in struct.iter_unpack(fmt, raw):
                yield st_name, info, shndx, value, sz

    def _symbol_values(self, symtab: Section) -> List[int]:
        return [v for (_n, _i, _s, v, _z) in self._raw_symbols(symtab)]

    def _strtab_of(self, sec: Section) -> Optional[bytes]:
        if sec.link >= len(self.sections):
            return None
        return bytes(self._table_bytes(self.sections[sec.link]))

    def symbols(self, names: Optional[Iterable[str]] = None,
                tables: Iterable[str] = (".symtab", ".dynsym")) -> Dict[str, Symbol]:
        """Defined symbols by name (first table wins, then the first entry).  With `names`,
        only entries whose name is one of them are decoded (fast on large tables)."""
        wanted = None if names is None else set(names)
        out: Dict[str, Symbol] = {}
        for tname in tables:
            sec = self.section(tname)
            if sec is None or sec.type not in (SHT_SYMTAB, SHT_DYNSYM):
                continue
            strdata = self._strtab_of(sec)
            if strdata is None:
                continue
            name_offs = None
            if wanted is not None:
                name_offs = {i for n in wanted for i in string_offsets(strdata, n)}
                if not name_offs:
                    continue
            n_str = len(strdata)
            for st_name, info, shndx, value, sz in self._raw_symbols(sec):
                if shndx == SHN_UNDEF or st_name == 0 or st_name >= n_str:
                    continue
                if name_offs is not None and st_name not in name_offs:
                    continue
                end = strdata.find(b"\0", st_name)
                name = strdata[st_name:end if end >= 0 else n_str].decode("utf-8", "replace")
                if name not in out and (wanted is None or name in wanted):
                    out[name] = Symbol(name, value, sz, info & 0xF, shndx, tname)
        return out

    def func_symbol_names(self) -> frozenset:
        """Names of the defined STT_FUNC symbols of .symtab."""
        sec = self.section(".symtab")
        if sec is None or sec.type != SHT_SYMTAB:
            return frozenset()
        strdata = self._strtab_of(sec)
        if strdata is None:
            return frozenset()
        if _c_func_symbol_names is not None:        # the same loop in C (dwarf/_cscan.c)
            return frozenset(_c_func_symbol_names(self._table_bytes(sec), strdata, self.is64,
                                                  self.little_endian))
        raw = strdata
        n_str = len(raw)
        names = set()
        for st_name, info, shndx, _v, _z in self._raw_symbols(sec):
            if info & 0xF == STT_FUNC and shndx != SHN_UNDEF and 0 < st_name < n_str:
                e = raw.find(b"\0", st_name)
                names.add(raw[st_name:e if e >= 0 else n_str].decode("utf-8", "replace"))
        return frozenset(names)

    def symbol_bytes(self, sym: Symbol) -> Optional[bytes]:
        """The bytes a data symbol occupies in its section (None when they are not in the
        file: SHT_NOBITS, a special section index, or out of range)."""
        if not 0 < sym.shndx < min(len(self.sections), SHN_LORESERVE):
            return None
        sec = self.sections[sym.shndx]
        if sec.type == SHT_NOBITS:
            return None
        start = sym.address - sec.addr if self.type != ET_REL else sym.address
        if start < 0 or start + sym.size > sec.size:
            return None
        return bytes(self.section_bytes(sec)[start:start + sym.size])


def string_offsets(table, name: str) -> list:
    """Offsets in a table of NUL-terminated strings at which the string read is `name`.
    Not only whole strings: linkers merge tails, so a symbol named `init_uts_ns` may point
    into the middle of `__ksymtab_init_uts_ns`."""
    return list(find_all(table, name.encode() + b"\0"))


def find_all(buf, needle: bytes, align: int = 1) -> Iterator[int]:
    """Every offset of `needle` in `buf` (bytes or mmap), optionally only those that are a
    multiple of `align`."""
    start = 0
    while True:
        i = buf.find(needle, start)
        if i < 0:
            return
        start = i + 1
        if i % align == 0:
            yield i


def parse_notes(data: bytes, little_endian: bool = True) -> List[Note]:
    """Split an ELF note area (a SHT_NOTE section, a PT_NOTE segment, /sys/kernel/notes).

    Each note: namesz, descsz, type (32-bit words in the file's byte order), then the name
    and the descriptor, each padded to 4 bytes.  A note cut short ends the list."""
    fmt = "<III" if little_endian else ">III"
    notes = []
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from(fmt, data, pos)
        pos += 12
        name = data[pos:pos + namesz]
        pos += (namesz + 3) & ~3
        desc = data[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if len(name) != namesz or len(desc) != descsz:
            break
        notes.append(Note(bytes(name).rstrip(b"\0"), ntype, bytes(desc)))
    return notes


def build_id_from_notes(data: bytes, little_endian: bool = True) -> str:
    """The GNU build-id (hex) in a note area, '' if none."""
    return build_id_from_notes_list(parse_notes(data, little_endian))


def build_id_from_notes_list(notes: List[Note]) -> str:
    for note in notes:
        if note.name == quirks.BUILD_ID_NOTE_OWNER and note.type == NT_GNU_BUILD_ID:
            return note.desc.hex()
    return ""


def elf_section_bytes(path: str, name: str, max_bytes: Optional[int] = None) -> bytes:
    """The contents of section `name` (e.g. ".BTF") of the ELF file at `path`.
    ElfError if the file is not an ELF or has no such section with data."""
    with ElfFile(path) as elf:
        data = elf.section_data(name, max_bytes)
    if data is None:
        raise ElfError(f"{path}: no {name} section")
    return data


def has_section(path: str, name: str) -> bool:
    with ElfFile(path) as elf:
        return elf.has_section(name)
