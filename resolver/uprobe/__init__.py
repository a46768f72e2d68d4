"""User-space probes: surftrace's `P <binary>:<func> args…` and `R …` expressions turned
into uprobe_events lines, for C programs and libraries (types from their DWARF or a debug
file found by build-id) and Go programs (register or stack ABI; `R` as one probe per RET,
never a uretprobe), and written into tracefs on request (`--apply`).

    binary.py   finding the binary / library / debug file; symbols and file offsets
    abi.py      argument registers per arch and ABI (C, Go register ABI, Go stack ABI)
    probe.py    the P/R translator (C through resolver.expr's translator)
    goprobe.py  Go: arguments, RET expansion; gotypes.py: Go struct members with sources
    apply.py    tracefs: write, enable, stream, remove
"""
from __future__ import annotations

from .binary import NoDebugInfo, NoSuchBinary, UserBinary, find_library, locate
from .probe import UProbe, UprobeTranslator, is_uprobe_line, split_uprobe

__all__ = ["NoDebugInfo", "NoSuchBinary", "UserBinary", "find_library", "locate", "UProbe",
           "UprobeTranslator", "is_uprobe_line", "split_uprobe"]
