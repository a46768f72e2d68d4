"""What kind of input a file is, from its first bytes, and which archive members are kernels.

    detect_input(path) -> 'rpm' | 'deb' | 'btf-archive' | 'elf' | 'raw-btf'

Light on purpose (no libarchive): the resolver and identity code import it.
"""
from __future__ import annotations

import re

from ..elf import ELF_MAGIC, open_regular
from ..errors import InputError

KINDS = ("rpm", "deb", "btf-archive", "elf", "raw-btf")     # what detect_input answers
PACKAGE_KINDS = ("rpm", "deb", "btf-archive")
KIND_TEXT = {"rpm": "RPM package", "deb": "Debian package", "btf-archive": "BTF archive",
             "elf": "ELF file", "raw-btf": "raw BTF file"}

RPM_LEAD_MAGIC = b"\xed\xab\xee\xdb"
AR_MAGIC = b"!<arch>\n"
BTF_MAGIC_LE = b"\x9f\xeb"
BTF_MAGIC_BE = b"\xeb\x9f"
COMPRESSED_MAGICS = (b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"\x1f\x8b", b"BZh")
TAR_MAGIC_AT = 257                  # "ustar" in a tar header

# Where the kernel is in a package (member paths compared without a leading "./" or "/")
KERNEL_MEMBER_PATTERNS = (
    re.compile(r"usr/lib/debug/boot/vmlinux-[^/]+"),
    re.compile(r"usr/lib/debug/lib/modules/[^/]+/vmlinux(\.debug)?"),
)
BTF_MEMBER_PATTERN = re.compile(r"([^/]+/)*[^/]+\.btf")
# kernel modules with debug info: foo.ko, foo.ko.debug (Fedora), compressed foo.ko.xz etc.
MODULE_PATTERN = re.compile(r"(?:[^/]+/)*([^/]+)\.ko(?:\.debug|\.xz|\.zst|\.gz)?")


def detect_input(path: str) -> str:
    """Classify `path` by its first bytes: 'rpm', 'deb', 'btf-archive', 'elf' or 'raw-btf'.
    InputError for a missing path, anything but a regular file, an empty or unrecognised
    file."""
    with open_regular(path, "kernel package or file") as fh:
        head = fh.read(512)
    if not head:
        raise InputError(f"{path}: empty file")
    if head.startswith(ELF_MAGIC):
        return "elf"
    if head.startswith(RPM_LEAD_MAGIC):
        return "rpm"
    if head.startswith(AR_MAGIC):
        return "deb"
    if head[:2] in (BTF_MAGIC_LE, BTF_MAGIC_BE) and len(head) >= 4 and head[2] == 1:
        return "raw-btf"
    if head.startswith(COMPRESSED_MAGICS) or head[TAR_MAGIC_AT:TAR_MAGIC_AT + 5] == b"ustar":
        return "btf-archive"
    raise InputError(f"{path}: unsupported input format (not an RPM, .deb/.ddeb, "
                     f".btf.tar.*, ELF or raw BTF file; starts with {head[:8].hex()})")


def is_kernel_member(name: str) -> bool:
    return any(p.fullmatch(name) for p in KERNEL_MEMBER_PATTERNS)


def module_name(file_stem: str) -> str:
    """Kernel module name from a file name stem: `nf-tables` -> `nf_tables`."""
    return file_stem.replace("-", "_")
