"""pahole-like text (and JSON) layout of a struct/union: offsets, sizes, holes, bitfields."""
from __future__ import annotations

from typing import Optional

from . import model as M


def member_size(g: M.TypeGraph, m: M.Member) -> int:
    return g.sizeof(m.type) or 0


def format_layout(g: M.TypeGraph, tid: int) -> str:
    t = g.types[tid]
    lines = [f"{t.kind} {t.name or ''} {{".replace("  ", " ")]
    _body(g, tid, 0, 1, lines)
    nmembers = len(t.members or [])
    lines.append(f"\n\t/* size: {t.size}, members: {nmembers} */")
    lines.append("};")
    return "\n".join(lines)


def _pad(text: str, column: int = 56) -> str:
    """Pad to a column as displayed with 8-column tabs (the comments line up)."""
    return text + " " * max(1, column - len(text.expandtabs(8)))


def _comment(off: int, size: int, bit: Optional[int] = None) -> str:
    if bit is None:
        return f"/* {off:5d} {size:5d} */"
    return f"/* {off:5d}:{bit:2d} {size:3d} */"


def _body(g: M.TypeGraph, tid: int, base_bits: int, depth: int, lines: list) -> None:
    t = g.types[tid]
    indent = "\t" * depth
    prev_end = None      # byte end of the previous member (structs only)
    is_struct = t.kind == M.STRUCT
    for m in t.members or ():
        abs_bits = base_bits + m.bit_offset
        size = member_size(g, m)
        if m.bit_size:
            unit = size or 4
            byte_off = (abs_bits // (unit * 8)) * unit
            bit_in = abs_bits - byte_off * 8
            start = byte_off
        else:
            byte_off = start = abs_bits // 8
        if is_struct and prev_end is not None and start > prev_end:
            lines.append(f"\n{indent}/* XXX {start - prev_end} bytes hole, try to pack */\n")
        mt = m.type
        target = g.types[mt]
        while target.kind in M.QUALIFIERS:
            mt = target.ref
            target = g.types[mt]
        if m.name is None and target.kind in M.COMPOSITE and not target.name:
            lines.append(f"{indent}{target.kind} {{")
            _body(g, mt, abs_bits, depth + 1, lines)
            lines.append(_pad(f"{indent}}};") + _comment(byte_off, size))
        elif m.bit_size:
            decl = M.c_decl(g, m.type, f"{m.name}:{m.bit_size}")
            lines.append(_pad(f"{indent}{decl};") + _comment(byte_off, size, bit_in))
        else:
            decl = M.c_decl(g, m.type, m.name or "")
            lines.append(_pad(f"{indent}{decl};") + _comment(byte_off, size))
        end = byte_off + size if not m.bit_size else (abs_bits + m.bit_size + 7) // 8
        prev_end = end if prev_end is None else max(prev_end, end)
    if is_struct and prev_end is not None and t.size is not None and t.size > prev_end:
        lines.append(f"\n{indent}/* XXX {t.size - prev_end} bytes padding at the end */")


def layout_json(g: M.TypeGraph, tid: int) -> dict:
    """Top-level members with absolute offsets; anonymous aggregates nested as `members`."""
    t = g.types[tid]
    return {"kind": t.kind, "name": t.name, "size": t.size,
            "members": _members_json(g, tid, 0)}


def _members_json(g: M.TypeGraph, tid: int, base_bits: int) -> list:
    out = []
    for m in g.types[tid].members or ():
        abs_bits = base_bits + m.bit_offset
        entry = {"name": m.name, "type": g.type_name(m.type), "offset": abs_bits // 8,
                 "size": g.sizeof(m.type),
                 "bit_offset": abs_bits if m.bit_size else None,
                 "bit_size": m.bit_size or None}
        stripped = g.types[g.strip(m.type)]
        if m.name is None and stripped.kind in M.COMPOSITE and not stripped.name:
            entry["members"] = _members_json(g, g.strip(m.type), abs_bits)
        out.append(entry)
    return out
