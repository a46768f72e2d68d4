"""A kernel module's identity, read through the ELF layer: `.modinfo` (NUL-separated
`key=value` strings that modpost and MODULE_*() macros put there) and what the ELF header
says.

    name        `name=` (modpost writes KBUILD_MODNAME), else the file name's stem with
                dashes as underscores, as the kernel spells module names
    vermagic    `6.1.0-47-cloud-amd64 SMP preempt mod_unload modversions ` — the kernel
                release it was built for is its first word; modules of one DB must agree
    srcversion  an md5 of the sources (modpost, for modules with MODULE_VERSION or with
                CONFIG_MODULE_SRCVERSION_ALL); '' when absent
    version     MODULE_VERSION(); depends: the modules it needs

A `.ko.debug` (objcopy --only-keep-debug) keeps `.modinfo` as NOBITS: its fields are ''.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..elf import ET_REL, SHT_NOBITS, ElfFile
from ..errors import ElfError

MAX_MODINFO = 1 << 20          # a real .modinfo is a few hundred bytes


@dataclass(frozen=True)
class ModInfo:
    name: str
    vermagic: str = ""
    srcversion: str = ""
    version: str = ""
    depends: str = ""
    arch: str = ""              # `uname -m` spelling of e_machine
    fields: dict = field(default_factory=dict, compare=False)

    @property
    def release(self) -> str:
        """The kernel release the module was built for ('' if it does not say)."""
        return self.vermagic.split()[0] if self.vermagic.split() else ""

    def as_meta(self) -> dict:
        return {"name": self.name, "vermagic": self.vermagic, "srcversion": self.srcversion,
                "version": self.version}


def parse_modinfo(raw: bytes) -> dict:
    """`key=value` strings -> {key: value} (the first value of a repeated key wins, as
    `modinfo -F` prints it first)."""
    out: dict = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            out.setdefault(key.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
    return out


def read_modinfo(elf: ElfFile, fallback_name: str) -> ModInfo:
    """The identity of the module `elf`; ElfError if it is not a kernel module."""
    if elf.type != ET_REL or not (elf.has_section(".modinfo")
                                  or elf.has_section(".gnu.linkonce.this_module")):
        raise ElfError(f"{elf.path}: not a kernel module (an ELF {elf.elf_type} file "
                       f"without .modinfo)")
    fields: dict = {}
    sec = elf.section(".modinfo")
    if sec is not None and sec.type != SHT_NOBITS:
        if sec.size > MAX_MODINFO:
            raise ElfError(f"{elf.path}: .modinfo is {sec.size} bytes (more than "
                           f"{MAX_MODINFO}): not a kernel module's")
        fields = parse_modinfo(bytes(elf.section_bytes(sec)))
    return ModInfo(name=fields.get("name") or fallback_name,
                   vermagic=fields.get("vermagic", ""),
                   srcversion=fields.get("srcversion", ""),
                   version=fields.get("version", ""),
                   depends=fields.get("depends", ""),
                   arch=elf.uname_machine,
                   fields=fields)
