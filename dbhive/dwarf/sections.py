"""The ELF side of the DWARF reader, over the project's one ELF layer (dbhive/elf.py):
which debug sections a file has, their bytes (decompressed when compressed), relocations for
relocatable objects, and the dwz supplementary file named by .gnu_debugaltlink.

Relocations: in a linked vmlinux (ET_EXEC) the .rela.debug_* sections are leftovers of
`--emit-relocs` and the section contents are already final, so they are ignored (applying
millions of them would only cost time).  In a relocatable object (ET_REL, e.g. a .ko) the
values in .debug_info are *not* final: string and abbreviation offsets are addends of
relocations against section symbols, so the relocations must be applied.
"""
from __future__ import annotations

import os
from typing import Optional

from ..elf import ElfFile
from ..errors import InputError

DEBUG_SECTIONS = ("info", "abbrev", "str", "line_str", "str_offsets", "line", "types")


class SectionError(Exception):
    def __init__(self, msg, section=None, offset=None):
        super().__init__(msg)
        self.section = section
        self.offset = offset


class DebugFile:
    """Debug sections of one ELF file as `bytes` (keys: 'info', 'abbrev', 'str', ...)."""

    def __init__(self, path: str):
        self.path = path
        self.sections: dict = {}
        self.altlink: Optional[str] = None
        self.is_dwo = False
        try:
            elf = ElfFile(path)
        except InputError as e:
            raise SectionError(_without_path(e, path)) from None
        with elf:
            self.little = elf.little_endian
            for key in DEBUG_SECTIONS:
                for name in (f".debug_{key}", f".debug_{key}.dwo"):
                    if elf.has_section(name) or elf.has_section(".z" + name[1:]):
                        self.is_dwo = self.is_dwo or name.endswith(".dwo")
                        self.sections[key] = self._section(elf, name)
                        break
            self.func_symbols = elf.func_symbol_names()
            if elf.has_section(".gnu_debugaltlink"):
                raw = self._section(elf, ".gnu_debugaltlink")
                self.altlink = raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    @staticmethod
    def _section(elf: ElfFile, name: str) -> bytes:
        """A section's contents (`.zdebug_*` or SHF_COMPRESSED: decompressed), with its
        relocations applied in a relocatable object."""
        try:
            return elf.relocated_section(name) or b""
        except InputError as e:
            raise SectionError(f"cannot read section ({_without_path(e, elf.path)})",
                               name) from None


def _without_path(e: Exception, path: str) -> str:
    msg = str(e)
    return msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg


def find_altfile(path: str, altlink: str) -> Optional[str]:
    """The dwz supplementary file named by .gnu_debugaltlink, relative to `path`."""
    cand = altlink if os.path.isabs(altlink) else os.path.join(os.path.dirname(path), altlink)
    return cand if os.path.exists(cand) else None


def has_debug_info(path: str) -> bool:
    try:
        with ElfFile(path) as elf:
            return any(elf.has_section(n)
                       for n in (".debug_info", ".zdebug_info", ".debug_info.dwo"))
    except InputError:
        return False
