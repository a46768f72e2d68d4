"""Compare a TypeGraph (BTF or DWARF reader, or loaded from a DB) with pahole's layouts.

`pahole_view` renders our graph the way tests/pahole_oracle.py describes pahole's output;
`compare_with_pahole` checks every struct/union pahole printed: size, and for every member
its path, byte offset, size, array dimensions, bitfield bit position and width.
"""
from __future__ import annotations

from dbhive import model as M


def pahole_view(g: M.TypeGraph, tid: int, prefix: str = "", base_bits: int = 0) -> list:
    """[(path, offset, size, bit_offset_total | None, bit_size | None, dims)] like pahole."""
    out = []
    types = g.types
    for m in types[tid].members or ():
        abs_bits = base_bits + m.bit_offset
        et, dims = m.type, []
        while types[et].kind in M.QUALIFIERS or types[et].kind == M.ARRAY:
            if types[et].kind == M.ARRAY:
                dims.append(types[et].nelems or 0)
            et = types[et].ref
        e = types[et]
        in_place = e.kind in M.COMPOSITE and not e.name
        if m.name is None and in_place:
            out.extend(pahole_view(g, et, prefix, abs_bits))
            continue
        size = g.sizeof(m.type) or 0
        if m.bit_size:
            unit = size * 8
            offset = (abs_bits // unit) * size
            out.append((prefix + (m.name or ""), offset, size, abs_bits, m.bit_size, dims))
        else:
            out.append((prefix + (m.name or ""), abs_bits // 8, size, None, None, dims))
        if in_place and m.name:
            out.extend(pahole_view(g, et, f"{prefix}{m.name}.", abs_bits))
    return out


def oracle_view(layout) -> list:
    return [(m.path, m.offset, m.size, m.bit_offset_total if m.is_bitfield else None,
             m.bit_size, list(m.array_dims)) for m in layout.members]


def compare_with_pahole(g: M.TypeGraph, pahole: dict) -> dict:
    """Check every pahole layout against ours.  Returns {'checked': n, 'problems': [...]}:
    a problem names the struct and the first differing member."""
    ours: dict = {}
    for tid, t in g.named(M.COMPOSITE):
        if t.size is None:
            continue
        ours.setdefault(f"{t.kind} {t.name}", []).append((t.size, pahole_view(g, tid)))
    problems, checked = [], 0
    for key, layouts in pahole.items():
        candidates = ours.get(key)
        if not candidates:
            problems.append(f"{key}: printed by pahole, absent from ours")
            continue
        for lay in layouts:
            checked += 1
            want = (lay.size, oracle_view(lay))
            if want in candidates:
                continue
            # say where the closest candidate differs
            size, view = candidates[0]
            if size != lay.size:
                problems.append(f"{key}: size {size}, pahole {lay.size}")
                continue
            for a, b in zip(view, want[1]):
                if a != b:
                    problems.append(f"{key}: member ours {a} != pahole {b}")
                    break
            else:
                problems.append(f"{key}: {len(view)} members, pahole {len(want[1])}")
    return {"checked": checked, "problems": problems}
