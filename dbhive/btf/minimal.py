"""Minimal BTF for given BPF objects: only what their CO-RE relocations need on one kernel
(what `bpftool gen min_core_btf` makes), from a kernel DB or any type graph.

For each relocation the first matching target type (core.relocate) is kept, the way
bpftool's btfgen keeps it:
  * field relocations: the root type and, along the target's access path, only the members
    on it and their types (typedefs, qualifiers and arrays followed; pointers not);
  * type relocations (exists, size, target id): the type, following pointers; structs and
    unions keep their size but no members;
  * TYPE_MATCHES: the type with all its members, recursively, stopping behind pointers
    (what the match compared);
  * enum-value relocations: the whole enum;
  * TYPE_ID_LOCAL needs nothing from the kernel.
A relocation no candidate satisfies keeps nothing (libbpf then finds nothing in the minimal
BTF either, as with the full one).  References to types not kept become void.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import model as M
from . import core as C
from . import ext as E

_MODS = (M.TYPEDEF, M.CONST, M.VOLATILE, M.RESTRICT, M.TYPE_TAG)


@dataclass
class Selection:
    """What to keep of a target: types, and for structs/unions which members (a type kept
    without an entry in `members` keeps none)."""
    types: set = field(default_factory=set)
    members: dict = field(default_factory=dict)       # type id -> {member index}
    relocated: list = field(default_factory=list)     # [core.Relocated] of every object

    def mark(self, v: C.TypeView, tid: int, follow_pointers: bool) -> None:
        stack = [tid]
        seen = set()
        while stack:
            tid = stack.pop()
            if tid == 0 or tid in seen:
                continue
            seen.add(tid)
            self.types.add(tid)
            t = v.type(tid)
            k = t.kind
            if k == M.PTR:
                if follow_pointers:
                    stack.append(t.ref or 0)
            elif k in _MODS:
                stack.append(t.ref or 0)
            elif k == M.ARRAY:
                stack.append(t.ref or 0)
            elif k == M.FUNC_PROTO:
                stack.append(t.ref or 0)
                stack.extend(p.type for p in t.params or ())

    def mark_match(self, v: C.TypeView, tid: int) -> None:
        """TYPE_MATCHES: members recursively, not behind pointers."""
        stack = [(tid, False)]
        seen = set()
        while stack:
            tid, behind = stack.pop()
            if tid == 0 or (tid, behind) in seen:
                continue
            seen.add((tid, behind))
            self.types.add(tid)
            t = v.type(tid)
            k = t.kind
            if k in M.COMPOSITE:
                if not behind:
                    self.members.setdefault(tid, set()).update(range(len(t.members or ())))
                    stack.extend((m.type, False) for m in t.members or ())
            elif k in _MODS or k == M.FWD:
                stack.append((t.ref or 0, behind))
            elif k == M.PTR:
                stack.append((t.ref or 0, True))
            elif k == M.ARRAY:
                stack.append((t.ref or 0, False))
            elif k == M.FUNC_PROTO:
                stack.append((t.ref or 0, False))
                stack.extend((p.type, False) for p in t.params or ())

    def mark_field_path(self, v: C.TypeView, spec: C.Spec) -> None:
        tid = spec.root
        self.mark(v, tid, False)
        for idx in spec.raw[1:]:
            tid, t = C.skip_mods(v, tid)
            if t.kind in M.COMPOSITE:
                self.members.setdefault(tid, set()).add(idx)
                tid = t.members[idx].type
                self.mark(v, tid, False)
            elif t.kind == M.ARRAY:
                tid = t.ref or 0
            else:
                raise C.CoreError(f"access path goes into a {C.kind_of(t)} (type id {tid})")

    def add(self, v: C.TypeView, r: C.Relocated) -> None:
        self.relocated.append(r)
        if r.target is None:
            return
        k = r.relo.kind
        if k in E.FIELD_KINDS:
            self.mark_field_path(v, r.target)
        elif k == E.TYPE_MATCHES:
            self.mark_match(v, r.target.root)
        elif k in E.TYPE_KINDS:
            self.mark(v, r.target.root, True)
        else:
            self.mark(v, r.target.root, False)


def select(objects: list, target: C.TypeView) -> Selection:
    """Relocate every CO-RE relocation of `objects` against `target` and record what the
    results need.  core.CoreError for a relocation libbpf would refuse."""
    sel = Selection()
    for obj in objects:
        lv = C.GraphView(obj.graph)
        cache: dict = {}
        for i, relo in enumerate(obj.relos):
            try:
                r = C.relocate(obj, relo, target, lv, cache)
            except C.CoreError as e:
                raise C.CoreError(f"{obj.path}: relocation #{i} ({relo.kind_name} "
                                  f"{relo.section} +{relo.insn_off}): {e}") from None
            sel.add(target, r)
    return sel


def subgraph(sel: Selection, target: C.TypeView) -> M.TypeGraph:
    """The kept types in target order; struct/union members filtered; references to types
    not kept become void."""
    keep = sorted(sel.types)
    new = {old: i + 1 for i, old in enumerate(keep)}
    g = M.TypeGraph(source="btf", ptr_size=target.ptr_size)

    def m(r):
        return new.get(r or 0, 0)
    for old in keep:
        t = target.type(old)
        members = None
        if t.members is not None:
            wanted = sel.members.get(old, ())
            members = [M.Member(x.name, m(x.type), x.bit_offset, x.bit_size)
                       for i, x in enumerate(t.members) if i in wanted]
        g.add(M.Type(t.kind, t.name, t.size, None if t.ref is None else m(t.ref),
                     members=members,
                     enumerators=None if t.enumerators is None else list(t.enumerators),
                     nelems=t.nelems,
                     params=None if t.params is None else
                     [M.Param(p.name, m(p.type)) for p in t.params],
                     variadic=t.variadic, signed=t.signed, encoding=t.encoding))
    return g


def minimal_graph(objects: list, target: C.TypeView) -> tuple:
    """(graph of what `objects` need from `target`, the Selection with every relocation)."""
    sel = select(objects, target)
    return subgraph(sel, target), sel
