"""Quirks of Go toolchains and libraries, each named and explained in one place (kernel and
distro quirks are in dbhive/quirks.py).  Code that depends on one imports it from here."""
from __future__ import annotations

from typing import Optional, Tuple

# Go 1.20 renamed the linker's itab symbols from `go.itab.T,I` to `go:itab.T,I`.
ITAB_PREFIXES = ("go:itab.", "go.itab.")

# Assembly functions carry their ABI in .symtab (`runtime.goexit.abi0`), not in the pclntab.
ASM_ABI_SUFFIX = ".abi0"

# The register-based calling convention: amd64 from Go 1.17 (g in r14), arm64 from 1.18
# (g is x28 in every release).  Before, arguments and results are on the stack, and on amd64
# g lives in thread-local storage (at fsbase - 8).
REGISTER_ABI_SINCE = {"x86_64": (1, 17), "amd64": (1, 17), "aarch64": (1, 18), "arm64": (1, 18)}
G_IN_TLS_BEFORE_REGISTER_ABI = ("x86_64", "amd64")


def register_abi(machine: str, version: Optional[Tuple[int, ...]]) -> bool:
    """Does this Go release pass arguments in registers on this machine?"""
    since = REGISTER_ABI_SINCE.get(machine)
    return since is not None and version is not None and tuple(version[:2]) >= since


def strip_itab_prefix(name: str) -> str:
    for p in ITAB_PREFIXES:
        if name.startswith(p):
            return name[len(p):]
    return name
