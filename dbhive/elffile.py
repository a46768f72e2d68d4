"""Small ELF helpers shared by the input side (identity) and the readers (BTF, DWARF).

Everything goes through pyelftools; this module only adds what the project needs on top:
opening with clear errors, raw section bytes, the GNU build-id, and the ELF note format
(also used for /sys/kernel/notes, which is a bare sequence of notes without an ELF around it).

`InputError` lives here, the lowest layer, so every input module can raise it;
`dbhive.archive` re-exports it.
"""
from __future__ import annotations

import os
import struct
from contextlib import contextmanager
from typing import Iterator, NamedTuple, Optional

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

ELF_MAGIC = b"\x7fELF"
NT_GNU_BUILD_ID = 3

# e_machine -> the `uname -m` spelling.  Entries are (e_machine, elfclass, little_endian)
# because a few machines are spelled differently by word size or byte order.
_UNAME_M = {
    ("EM_X86_64", 64, True): "x86_64",
    ("EM_386", 32, True): "i686",
    ("EM_AARCH64", 64, True): "aarch64",
    ("EM_AARCH64", 64, False): "aarch64_be",
    ("EM_ARM", 32, True): "armv7l",
    ("EM_PPC64", 64, True): "ppc64le",
    ("EM_PPC64", 64, False): "ppc64",
    ("EM_PPC", 32, False): "ppc",
    ("EM_S390", 64, False): "s390x",
    ("EM_S390", 32, False): "s390",
    ("EM_RISCV", 64, True): "riscv64",
    ("EM_RISCV", 32, True): "riscv32",
    ("EM_LOONGARCH", 64, True): "loongarch64",
    ("EM_MIPS", 64, True): "mips64",
    ("EM_MIPS", 64, False): "mips64",
    ("EM_MIPS", 32, True): "mips",
    ("EM_MIPS", 32, False): "mips",
    ("EM_SPARCV9", 64, False): "sparc64",
}


class InputError(Exception):
    """An input file that cannot be used.  The message is one line naming the file."""


class Note(NamedTuple):
    name: bytes     # owner, without the trailing NUL (b"GNU", b"Linux", b"Xen")
    type: int
    desc: bytes


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == ELF_MAGIC
    except OSError:
        return False


@contextmanager
def open_elf(path: str) -> Iterator[ELFFile]:
    """An `ELFFile` over `path`; InputError if the file is not a readable ELF."""
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror}") from None
    with fh:
        try:
            elf = ELFFile(fh)
            # touch the section header table now, so a damaged file fails here with a clear
            # message instead of deep inside a caller
            elf.num_sections()
        except (ELFError, struct.error, ValueError) as e:
            raise InputError(f"{path}: not a valid ELF file ({e})") from None
        size = os.fstat(fh.fileno()).st_size
        shend = elf["e_shoff"] + elf["e_shnum"] * elf["e_shentsize"]
        if shend > size:
            raise InputError(f"{path}: truncated ELF file (section headers end at byte "
                             f"{shend}, file has {size})")
        yield elf


def uname_machine(elf: ELFFile) -> str:
    """The `uname -m` spelling of the ELF's machine ('' if unknown)."""
    key = (elf["e_machine"], elf.elfclass, elf.little_endian)
    return _UNAME_M.get(key, "")


def section_data(elf: ELFFile, name: str, path: str = "") -> Optional[bytes]:
    """Raw bytes of section `name`; None if absent.  InputError if it has no file data
    (SHT_NOBITS, as in `objcopy --only-keep-debug` output) or the file is cut short."""
    sec = elf.get_section_by_name(name)
    if sec is None:
        return None
    if sec["sh_type"] == "SHT_NOBITS":
        raise InputError(f"{path}: section {name} has no data in this file (SHT_NOBITS)")
    data = sec.data()
    if len(data) != sec["sh_size"]:
        raise InputError(f"{path}: truncated ELF file (section {name} is cut short)")
    return data


def has_section(path: str, name: str) -> bool:
    with open_elf(path) as elf:
        return elf.get_section_by_name(name) is not None


def elf_section_bytes(path: str, name: str) -> bytes:
    """Raw bytes of section `name` (e.g. ".BTF") of the ELF file at `path`.
    InputError if the file is not an ELF or has no such section with data."""
    with open_elf(path) as elf:
        data = section_data(elf, name, path)
    if data is None:
        raise InputError(f"{path}: no {name} section")
    return data


def parse_notes(data: bytes, little_endian: bool = True) -> list[Note]:
    """Split an ELF note area (a SHT_NOTE section, a PT_NOTE segment, /sys/kernel/notes).

    Each note: namesz, descsz, type (32-bit words in the file's byte order), then the name
    and the descriptor, each padded to 4 bytes."""
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
            break                       # cut short: ignore the partial note
        notes.append(Note(name.rstrip(b"\0"), ntype, desc))
    return notes


def gnu_build_id(elf: ELFFile) -> str:
    """The NT_GNU_BUILD_ID note as lowercase hex ('' if the ELF has none).

    Looks at SHT_NOTE sections (vmlinux: `.notes`), then PT_NOTE segments.  Only notes
    owned by "GNU" count: the kernel's Xen notes reuse type number 3."""
    areas = [s.data() for s in elf.iter_sections() if s["sh_type"] == "SHT_NOTE"]
    if not areas:
        areas = [seg.data() for seg in elf.iter_segments() if seg["p_type"] == "PT_NOTE"]
    for data in areas:
        build_id = build_id_from_notes(data, elf.little_endian)
        if build_id:
            return build_id
    return ""


def build_id_from_notes(data: bytes, little_endian: bool = True) -> str:
    for note in parse_notes(data, little_endian):
        if note.name == b"GNU" and note.type == NT_GNU_BUILD_ID:
            return note.desc.hex()
    return ""
