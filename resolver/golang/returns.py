"""Where to put a Go function's uprobes: its RET instructions (plain uprobes instead of a
uretprobe), and its entry after the stack-growth check.

x86_64: a linear sweep with capstone (a 0xC3 byte can sit inside another instruction; ENDBR64
decodes as one 4-byte instruction).  arm64: fixed 4-byte instructions, RET (any register) is
`(insn & 0xfffffc1f) == 0xd65f0000`.
"""
from __future__ import annotations

import struct
from functools import lru_cache
from typing import Callable, List, Optional

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


# --- the stack-growth check ------------------------------------------------------------------
# A Go function starts by comparing SP with the goroutine's stack guard and branching to a
# block at its end that calls runtime.morestack, which grows the stack and jumps back to the
# function's first instruction: a probe there fires twice for a call that grew the stack.
# So an entry probe goes on the instruction after that branch (the arguments are still
# where they were at entry: the check touches only scratch registers and not SP).
PROLOGUE_INSNS = 8
MORESTACK_BLOCK_INSNS = 16
_CHECK_BRANCHES = {"amd64": {"jbe", "jna", "jb", "jc", "jnae"},
                   "arm64": {"b.ls", "b.lo", "b.cc", "b.hs", "b.cs"}}
_CALLS = {"amd64": {"call"}, "arm64": {"bl"}}


@lru_cache(maxsize=None)
def _disassembler(arch: str):
    if arch == "amd64":
        return capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    return capstone.Cs(getattr(capstone, "CS_ARCH_ARM64", None) or capstone.CS_ARCH_AARCH64,
                       capstone.CS_MODE_ARM)


def after_stack_check(arch: str, read: Callable[[int, int], Optional[bytes]], entry: int,
                      size: int, func_name_at: Callable[[int], Optional[str]]) -> Optional[int]:
    """The address after the branch to the morestack block, or None (no stack check: a
    NOSPLIT function, or an arch this does not know).  `read(vaddr, n)` gives code bytes,
    `func_name_at(vaddr)` the name of the function holding an address."""
    if arch not in _CHECK_BRANCHES:
        return None
    code = read(entry, min(size, 96))
    if not code:
        return None
    md = _disassembler(arch)
    for n, (addr, isz, mnem, ops) in enumerate(md.disasm_lite(code, entry)):
        if n >= PROLOGUE_INSNS:
            break
        if mnem not in _CHECK_BRANCHES[arch]:
            continue
        target = _branch_target(ops)
        if target is None or not addr < target < entry + size:
            continue
        block = read(target, min(entry + size - target, 128)) or b""
        for k, (_a, _s, m2, ops2) in enumerate(md.disasm_lite(block, target)):
            if k >= MORESTACK_BLOCK_INSNS:
                break
            callee = _branch_target(ops2) if m2 in _CALLS[arch] else None
            name = func_name_at(callee) if callee is not None else None
            if name is not None and name.startswith("runtime.morestack"):
                return addr + isz
    return None


def _branch_target(ops: str) -> Optional[int]:
    t = ops.strip().lstrip("#")
    try:
        return int(t, 16) if t.startswith("0x") else None
    except ValueError:
        return None
