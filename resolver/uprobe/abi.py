"""Where a function's arguments are at its first instruction, per architecture and ABI, as
uprobe fetch-args spell them (`%di`, `%x0`, `+16(%sp)`).

C (the SysV/AAPCS64 calling conventions): integer and pointer arguments in
  x86_64   rdi rsi rdx rcx r8 r9         (result in rax)
  aarch64  x0 .. x7                      (result in x0)
`%N` is the Nth of these, as the surftrace client maps it; the kernel side's register
tables (resolver.expr.ARCH_REGS) start with the same ones.

Go: from Go 1.17 on amd64 and 1.18 on arm64 (resolver.golang.quirks.register_abi) the
register ABI passes integer words in
  amd64    rax rbx rcx rdi rsi r8 r9 r10 r11      (9)
  arm64    x0 .. x15                             (16)
and returns results in the same registers, in the same order.  A string takes two words
(pointer, length), a slice three (pointer, length, capacity), an interface two.  Before, the
stack ABI: arguments and then results in the caller's frame, at 8(SP) onwards at the first
instruction (amd64: above the return address; arm64: above the slot of the saved link
register).  `%N` for Go is argument word N.
"""
from __future__ import annotations

from typing import Optional, Tuple

C_ARG_REGS = {
    "x86_64": ("di", "si", "dx", "cx", "r8", "r9"),
    "aarch64": tuple(f"x{i}" for i in range(8)),
}
GO_ARG_REGS = {
    "x86_64": ("ax", "bx", "cx", "di", "si", "r8", "r9", "r10", "r11"),
    "aarch64": tuple(f"x{i}" for i in range(16)),
}
STACK_POINTER = {"x86_64": "sp", "aarch64": "sp"}
# the first argument word's offset from the stack pointer at a function's first instruction
# (and at its RET, where the frame is the caller's again), Go's stack ABI
GO_STACK_ARGS_AT = {"x86_64": 8, "aarch64": 8}
WORD = 8


def go_word(arch: str, register_abi: bool, n: int) -> Tuple[str, Optional[str]]:
    """(fetch-arg text, None) of Go argument word n, or ("", why it cannot be had)."""
    if register_abi:
        regs = GO_ARG_REGS[arch]
        if n >= len(regs):
            return "", (f"argument word {n} is not in a register (Go's register ABI on "
                        f"{arch} has {len(regs)} integer argument registers)")
        return "%" + regs[n], None
    return "+%d(%%%s)" % (GO_STACK_ARGS_AT[arch] + WORD * n, STACK_POINTER[arch]), None


def c_arg(arch: str, n: int) -> Optional[str]:
    regs = C_ARG_REGS[arch]
    return "%" + regs[n] if n < len(regs) else None
