"""The ELF side of the DWARF reader: which debug sections a file has, their bytes
(decompressed by pyelftools when SHF_COMPRESSED), relocations for relocatable objects, and
the dwz supplementary file named by .gnu_debugaltlink.

Relocations: in a linked vmlinux (ET_EXEC) the .rela.debug_* sections are leftovers of
`--emit-relocs` and the section contents are already final, so they are ignored (applying
millions of them would only cost time).  In a relocatable object (ET_REL, e.g. a .ko) the
values in .debug_info are *not* final: string and abbreviation offsets are addends of
relocations against section symbols, so the relocations must be applied.
"""
from __future__ import annotations

import os
import struct
from typing import Optional

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

DEBUG_SECTIONS = ("info", "abbrev", "str", "line_str", "str_offsets", "line", "types")

# relocation types that store S + A: {e_machine: {type: width}}
_ABS_RELOCS = {
    "EM_X86_64": {1: 8, 10: 4, 11: 4},            # R_X86_64_64, _32, _32S
    "EM_AARCH64": {257: 8, 258: 4},               # R_AARCH64_ABS64, _ABS32
    "EM_386": {1: 4},                             # R_386_32
    "EM_RISCV": {1: 4, 2: 8},                     # R_RISCV_32, _64
    "EM_PPC64": {1: 4, 38: 8},                    # R_PPC64_ADDR32, _ADDR64
    "EM_S390": {4: 4, 22: 8},                     # R_390_32, _64
}


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
        with open(path, "rb") as fh:
            try:
                elf = ELFFile(fh)
                sections = list(elf.iter_sections())
            except Exception as e:            # ELFError, construct errors on a bad header
                raise SectionError(f"not a valid ELF file ({e})") from None
            self.elf_type = elf["e_type"]
            self.machine = elf["e_machine"]
            self.little = elf.little_endian
            self.elfclass = elf.elfclass
            by_name = {}
            for i, sec in enumerate(sections):
                by_name[sec.name] = (i, sec)
            for key in DEBUG_SECTIONS:
                for name in (f".debug_{key}", f".zdebug_{key}", f".debug_{key}.dwo"):
                    if name in by_name:
                        self.is_dwo = self.is_dwo or name.endswith(".dwo")
                        idx, sec = by_name[name]
                        data = self._section_bytes(sec, name)
                        if self.elf_type == "ET_REL":
                            data = self._relocate(elf, by_name, idx, name, data)
                        self.sections[key] = data
                        break
            self.func_symbols = self._func_symbols(by_name)
            if ".gnu_debugaltlink" in by_name:
                raw = by_name[".gnu_debugaltlink"][1].data()
                self.altlink = raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    def _func_symbols(self, by_name) -> frozenset:
        """Names of the defined STT_FUNC symbols of .symtab (64-bit little-endian files;
        other files fall back to pyelftools)."""
        if ".symtab" not in by_name:
            return frozenset()
        symtab = by_name[".symtab"][1]
        try:
            if self.elfclass == 64 and self.little:
                strtab = symtab.stringtable.data()
                names = set()
                for name, info, _o, shndx, _v, _s in struct.iter_unpack("<IBBHQQ",
                                                                        symtab.data()):
                    if info & 0xF == 2 and shndx != 0:
                        e = strtab.find(b"\0", name)
                        names.add(strtab[name:e].decode("utf-8", "replace"))
                return frozenset(names)
            return frozenset(s.name for s in symtab.iter_symbols()
                             if s["st_info"]["type"] == "STT_FUNC"
                             and s["st_shndx"] != "SHN_UNDEF")
        except (ELFError, struct.error, ValueError):
            return frozenset()

    @staticmethod
    def _section_bytes(sec, name) -> bytes:
        try:
            data = sec.data()
        except Exception as e:          # truncated file, bad compression header, ...
            raise SectionError(f"cannot read section ({e})", name) from None
        if name.startswith(".zdebug_"):
            import zlib
            if data[:4] != b"ZLIB":
                raise SectionError("bad .zdebug header", name, 0)
            try:
                data = zlib.decompress(data[12:])
            except zlib.error as e:
                raise SectionError(f"bad compressed data ({e})", name, 12) from None
        if len(data) != sec["sh_size"] and sec["sh_type"] != "SHT_NOBITS" \
                and not (sec["sh_flags"] & 0x800) and not name.startswith(".zdebug_"):
            raise SectionError("section is truncated", name, len(data))
        return bytes(data)

    def _relocate(self, elf, by_name, idx, name, data: bytes) -> bytes:
        rel = None
        for rname in (".rela" + name, ".rel" + name):
            if rname in by_name:
                rel = by_name[rname][1]
                break
        if rel is None:
            return data
        widths = _ABS_RELOCS.get(self.machine)
        symtab = elf.get_section(rel["sh_link"])
        if widths is None or self.elfclass != 64 or not self.little \
                or rel["sh_type"] != "SHT_RELA":
            return self._relocate_generic(elf, rel, data, name)
        # fast path: 64-bit little-endian RELA, absolute relocations only
        symvals = [v for (_n, _i, _o, _s, v, _z) in
                   struct.iter_unpack("<IBBHQQ", symtab.data())]
        out = bytearray(data)
        raw = rel.data()
        n = len(out)
        for r_offset, r_info, r_addend in struct.iter_unpack("<QQq", raw):
            rtype = r_info & 0xFFFFFFFF
            if rtype == 0:
                continue
            width = widths.get(rtype)
            sym = r_info >> 32
            if width is None or sym >= len(symvals) or r_offset + width > n:
                raise SectionError(f"unsupported or out-of-range relocation (type {rtype}) "
                                   f"in {rel.name}", name, r_offset)
            v = (symvals[sym] + r_addend) & ((1 << (8 * width)) - 1)
            out[r_offset:r_offset + width] = v.to_bytes(width, "little")
        return bytes(out)

    @staticmethod
    def _relocate_generic(elf, rel, data, name) -> bytes:
        """Other ELF classes / machines: pyelftools' relocation handler."""
        import io
        from elftools.elf.relocation import RelocationHandler
        stream = io.BytesIO(data)
        try:
            RelocationHandler(elf).apply_section_relocations(stream, rel)
        except ELFError as e:
            raise SectionError(f"cannot apply {rel.name} ({e})", name) from None
        return stream.getvalue()


def find_altfile(path: str, altlink: str) -> Optional[str]:
    """The dwz supplementary file named by .gnu_debugaltlink, relative to `path`."""
    cand = altlink if os.path.isabs(altlink) else os.path.join(os.path.dirname(path), altlink)
    return cand if os.path.exists(cand) else None


def has_debug_info(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            return any(elf.get_section_by_name(n) is not None
                       for n in (".debug_info", ".zdebug_info", ".debug_info.dwo"))
    except (OSError, ELFError, Exception):
        return False
