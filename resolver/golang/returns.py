"""Return instructions of a function: where to put plain uprobes instead of a uretprobe.

x86_64: a linear sweep with capstone (a 0xC3 byte can sit inside another instruction; ENDBR64
decodes as one 4-byte instruction).  arm64: fixed 4-byte instructions, RET (any register) is
`(insn & 0xfffffc1f) == 0xd65f0000`.
"""
from __future__ import annotations

import struct
from functools import lru_cache
from typing import List

import capstone

from dbhive.errors import GoFormatError

X86_RET_MNEMONICS = frozenset({"ret", "retq", "retn"})
ARM64_RET_MASK, ARM64_RET = 0xFFFFFC1F, 0xD65F0000


class ReturnsError(GoFormatError):
    """No return finder for this architecture."""


@lru_cache(maxsize=None)
def _x86_64():
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    md.skipdata = True     # keep sweeping past a byte capstone cannot decode
    return md


def x86_64_returns(code: bytes, vaddr: int) -> List[int]:
    """vaddrs of RET instructions in code that starts at vaddr."""
    out = []
    for addr, _size, mnemonic, _ops in _x86_64().disasm_lite(code, vaddr):
        if mnemonic in X86_RET_MNEMONICS:
            out.append(addr)
    return out


def arm64_returns(code: bytes, vaddr: int, big_endian: bool = False) -> List[int]:
    fmt = (">" if big_endian else "<") + "I"
    out = []
    for i, (insn,) in enumerate(struct.iter_unpack(fmt, code[:len(code) - len(code) % 4])):
        if insn & ARM64_RET_MASK == ARM64_RET:
            out.append(vaddr + 4 * i)
    return out


def find_returns(arch: str, code: bytes, vaddr: int, big_endian: bool = False) -> List[int]:
    if arch == "amd64":
        return x86_64_returns(code, vaddr)
    if arch == "arm64":
        return arm64_returns(code, vaddr, big_endian)
    raise ReturnsError(f"finding returns is not supported for {arch}")
