"""DWARF -> TypeGraph: every struct, union, enum, typedef, base type and function
prototype of an ELF file's debug information, in the shared model (dbhive/model.py).

    graph = read_dwarf("vmlinux", progress=True)         # graph.source == "dwarf"

Covers DWARF 2-5 (all forms incl. strx*/line_strp/implicit_const/ref_addr/data16/ref_sig8),
.debug_types and DWARF 5 type units, dwz files (partial/imported units, in the same file or
a .gnu_debugaltlink supplementary file), split-DWARF .dwo files, compressed sections, and
relocatable objects (kernel modules: relocations applied; a linked vmlinux's leftover
.rela.debug_* are not, its values being final).

What the graph holds:
  * types deduplicated across units; a name with several layouts keeps each, tagged with
    the unit it was first read from (`Type.origin`; for a dwz partial unit, a unit that
    imports it; type units have none);
  * types declared inside functions (BTF and `pahole --show_private_classes` list them);
  * functions like pahole's BTF encoder picks them: definitions with machine code, or
    whose name is an ELF function symbol (folded aliases); each distinct
    (name, prototype, static, file, line) once, functions with code first;
  * a declaration-only struct/union/enum is a FWD; a pointer to a named struct reaches the
    first complete layout of that name.

How it is fast enough (see forms.py / scan.py): per-abbreviation decoders
compiled to Python, function bodies skipped via DW_AT_sibling, the types of a header
deduplicated by interning (keys.py), and the units split across worker processes
(fork; each worker interns its share, the parent merges the key tables).
"""
from __future__ import annotations

import os

from ..errors import DwarfError

__all__ = ["DwarfError", "c_enabled", "has_dwarf", "read_dwarf", "read_dwarf_keys"]


def c_enabled() -> bool:
    """Whether the C hot paths (dwarf/_cscan.c: the scanner, the interner's loop, key
    remapping, abbreviation tables, module relocations) are used: built, and not turned off
    by DBHIVE_DWARF_PURE=1 (the pure-Python code, the reference, gives the same result)."""
    try:
        from . import _cscan  # noqa: F401
    except ImportError:
        return False
    return os.environ.get("DBHIVE_DWARF_PURE", "") in ("", "0")


def __getattr__(name):
    # the reader (multiprocessing, the decoders) is imported when first used, so that the
    # light parts (forms, units: the Go analyser reads a binary's DWARF with them) stay cheap
    if name in ("read_dwarf", "read_dwarf_keys", "has_dwarf"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'dbhive.dwarf' has no attribute {name!r}")
