"""Structural deduplication of a TypeGraph before it is written as BTF.

The rule is libbpf's `btf__dedup`: types that are structurally identical -- same kind, name,
size, members (names, offsets, bitfield widths) and identical types referred to, followed
through pointers and cycles -- appear once, and a forward declaration is resolved to the one
complete struct/union/enum of its name when there is exactly one.  So every struct name has
one definition per distinct shape; two same-named layouts that really differ (the kernel has
a few, from different units) stay apart, as libbpf keeps them.

How (our own algorithm, not libbpf's): every type first gets a *key*, a flat tuple of its own
fields plus the keys of what it refers to, where a named struct/union/typedef reached
through a pointer is represented by its kind and name only.  That breaks every cycle C allows
(`struct list_head *next`), and types with different keys can never be identical.  Types
that share a key are then split until each class agrees on the classes of everything it
refers to (partition refinement); what is left in a class is identical in the full,
cyclic sense (a bisimulation), and one representative -- the lowest id -- is kept.
"""
from __future__ import annotations

from typing import Optional

from .. import model as M
from ..errors import CorruptDB

_NAMED_BEHIND_PTR = (M.STRUCT, M.UNION, M.TYPEDEF)
_SIMPLE = (M.CONST, M.VOLATILE, M.RESTRICT, M.TYPE_TAG, M.TYPEDEF, M.ARRAY)


def refs(t: M.Type) -> list:
    """The type ids `t` refers to, in a fixed order (None counts as void)."""
    k = t.kind
    if k in M.COMPOSITE:
        return [m.type for m in t.members or ()]
    if k == M.FUNC_PROTO:
        return [t.ref or 0] + [p.type for p in t.params or ()]
    if k == M.PTR or k in _SIMPLE:
        return [t.ref or 0]
    return []


def _children(t: M.Type, vp: bool) -> list:
    """(id, behind a pointer) of what `t`'s key is made of."""
    k = t.kind
    if k == M.PTR:
        return [(t.ref or 0, True)]
    if k in _SIMPLE:
        return [(t.ref or 0, vp)]
    if k in M.COMPOSITE:
        return [(m.type, vp) for m in t.members or ()]
    if k == M.FUNC_PROTO:
        return [(t.ref or 0, True)] + [(p.type, True) for p in t.params or ()]
    return []


def _key(t: M.Type, cs: list) -> tuple:
    k = t.kind
    if k == M.INT:
        return (k, t.name, t.size, t.signed, t.encoding)
    if k == M.FLOAT:
        return (k, t.name, t.size)
    if k == M.FWD:
        return (k, t.encoding, t.name)
    if k == M.ENUM:
        return (k, t.name, t.size, t.signed, tuple(tuple(e) for e in t.enumerators or ()))
    if k == M.PTR or k == M.CONST or k == M.VOLATILE or k == M.RESTRICT:
        return (k, cs[0])
    if k == M.TYPE_TAG or k == M.TYPEDEF:
        return (k, t.name, cs[0])
    if k == M.ARRAY:
        return (k, t.nelems, cs[0])
    if k in M.COMPOSITE:
        return (k, t.name, t.size,
                tuple((m.name, m.bit_offset, m.bit_size) for m in t.members or ()), tuple(cs))
    if k == M.FUNC_PROTO:
        return (k, bool(t.variadic), tuple(p.name for p in t.params or ()), tuple(cs))
    return (k,)


def classes(g: M.TypeGraph) -> list:
    """The class of every type id (equal classes = structurally identical types)."""
    types = g.types
    n = len(types)
    for tid, t in enumerate(types):
        for r in refs(t):
            if not 0 <= r < n:
                raise CorruptDB(f"type id {tid} refers to type id {r}, which does not exist")
    intern: dict = {}
    memo: dict = {}                 # (tid << 1) | vp -> key id
    on_stack: set = set()
    full = [0] * n
    for root in range(n):
        if (root << 1) in memo:
            full[root] = memo[root << 1]
            continue
        # iterative post-order walk: (tid, vp, children resolved?)
        stack = [(root, False, False)]
        while stack:
            tid, vp, ready = stack.pop()
            mk = (tid << 1) | vp
            if mk in memo:
                continue
            t = types[tid]
            if vp and t.name and t.kind in _NAMED_BEHIND_PTR:
                memo[mk] = intern.setdefault(("ref", t.kind, t.name), len(intern))
                continue
            kids = _children(t, vp)
            if not ready:
                if mk in on_stack:
                    raise CorruptDB(f"type id {tid} refers to itself by value "
                                    f"(a reference cycle through type ids "
                                    f"{sorted(x >> 1 for x in on_stack)[:8]})")
                on_stack.add(mk)
                stack.append((tid, vp, True))
                for c, cvp in kids:
                    if ((c << 1) | cvp) not in memo:
                        stack.append((c, cvp, False))
                continue
            on_stack.discard(mk)
            cs = [memo[(c << 1) | cvp] for c, cvp in kids]
            memo[mk] = intern.setdefault(_key(t, cs), len(intern))
        full[root] = memo[root << 1]
    return _refine(types, full)


def _refine(types: list, cls: list) -> list:
    """Split classes until the members of each agree on the classes they refer to."""
    while True:
        members: dict = {}
        for tid, c in enumerate(cls):
            members.setdefault(c, []).append(tid)
        shared = [ids for ids in members.values() if len(ids) > 1]
        if not shared:
            return cls
        changed = False
        next_id = len(cls) + max(cls, default=0) + 1
        new = list(cls)
        for ids in shared:
            split: dict = {}
            for tid in ids:
                sig = tuple(cls[r] for r in refs(types[tid]))
                split.setdefault(sig, []).append(tid)
            if len(split) > 1:
                changed = True
                for part in list(split.values())[1:]:
                    for tid in part:
                        new[tid] = next_id
                    next_id += 1
        if not changed:
            return cls
        cls = new


def resolve_forwards(g: M.TypeGraph, cls: list) -> dict:
    """FWD type id -> the complete struct/union/enum it declares, where the name has exactly
    one complete definition (one class) of that kind."""
    complete: dict = {}
    for tid, t in enumerate(g.types):
        if t.kind in M.COMPOSITE or (t.kind == M.ENUM and t.enumerators):
            if t.name and t.size is not None:
                complete.setdefault((t.kind, t.name), {}).setdefault(cls[tid], tid)
    out = {}
    for tid, t in enumerate(g.types):
        if t.kind == M.FWD and t.name:
            found = complete.get((t.encoding or M.STRUCT, t.name))
            if found and len(found) == 1:
                out[tid] = next(iter(found.values()))
    return out


def dedup(g: M.TypeGraph) -> tuple:
    """(new graph, old type id -> new type id).  Functions that became identical (name,
    linkage, prototype) are kept once; variables, data sections and tags follow."""
    cls = classes(g)
    fwd = resolve_forwards(g, cls)
    if fwd:
        g = _retarget(g, fwd)
        cls = classes(g)
        for a, b in fwd.items():          # the declaration becomes its definition
            cls[a] = cls[b]
    if len(set(cls)) == len(cls):             # nothing to merge (a kernel's own BTF)
        return _dedup_rest(g, list(range(len(cls)))), list(range(len(cls)))
    rep: dict = {}
    for tid, c in enumerate(cls):
        if c not in rep or g.types[rep[c]].kind == M.FWD != g.types[tid].kind:
            rep[c] = tid
    order = sorted(rep.values())
    new_of_rep = {old: new for new, old in enumerate(order)}
    new_id = [new_of_rep[rep[c]] for c in cls]
    out = M.TypeGraph(types=[], source=g.source, ptr_size=g.ptr_size)
    for old in order:
        out.types.append(_copy(g.types[old], new_id))
    return _dedup_rest(g, new_id, out), new_id


def _dedup_rest(g: M.TypeGraph, new_id: list, out: M.TypeGraph = None) -> M.TypeGraph:
    """Functions, variables, data sections and tags of `g` mapped into `out` (`g` itself
    when no types were merged and nothing else repeats)."""
    if out is None:
        keys = {(f.name, f.static, f.proto) for f in g.functions}
        tags = {(t.value, t.target_kind, t.target, t.component) for t in g.decl_tags}
        if len(keys) == len(g.functions) and len(tags) == len(g.decl_tags):
            return g
        out = M.TypeGraph(types=g.types, source=g.source, ptr_size=g.ptr_size)
    fmap = _dedup_functions(g, out, new_id)
    for v in g.variables:
        out.variables.append(M.Variable(v.name, new_id[v.type], v.linkage))
    for d in g.datasecs:
        out.datasecs.append(M.DataSec(d.name, d.size, [
            (kind, fmap[i] if kind == "func" else i, off, size)
            for kind, i, off, size in d.entries]))
    seen = set()
    for tag in g.decl_tags:
        target = (new_id[tag.target] if tag.target_kind == "type" else
                  fmap[tag.target] if tag.target_kind == "func" else tag.target)
        key = (tag.value, tag.target_kind, target, tag.component)
        if key not in seen:
            seen.add(key)
            out.decl_tags.append(M.DeclTag(*key))
    return out


def _retarget(g: M.TypeGraph, fwd: dict) -> M.TypeGraph:
    """A copy of `g` whose references to resolved FWDs point at their definition."""
    ident = list(range(len(g.types)))
    for a, b in fwd.items():
        ident[a] = b
    out = M.TypeGraph(types=[_copy(t, ident) for t in g.types], functions=g.functions,
                      variables=g.variables, datasecs=g.datasecs, decl_tags=g.decl_tags,
                      source=g.source, ptr_size=g.ptr_size)
    return out


def _copy(t: M.Type, m: list) -> M.Type:
    """`t` with its references mapped through `m`."""
    return M.Type(
        t.kind, t.name, t.size, None if t.ref is None else m[t.ref],
        members=None if t.members is None else
        [M.Member(x.name, m[x.type], x.bit_offset, x.bit_size) for x in t.members],
        enumerators=None if t.enumerators is None else list(t.enumerators),
        nelems=t.nelems,
        params=None if t.params is None else [M.Param(p.name, m[p.type]) for p in t.params],
        variadic=t.variadic, signed=t.signed, encoding=t.encoding, origin=t.origin)


def _dedup_functions(g: M.TypeGraph, out: M.TypeGraph, new_id: list) -> list:
    index: dict = {}
    fmap = []
    for f in g.functions:
        key = (f.name, f.static, new_id[f.proto])
        i = index.get(key)
        if i is None:
            i = index[key] = len(out.functions)
            out.functions.append(M.Function(f.name, key[2], f.static, f.file, f.line,
                                            f.module))
        fmap.append(i)
    return fmap


def dedup_count(g: M.TypeGraph) -> Optional[int]:
    """How many types dedup would remove (for reports and tests)."""
    cls = classes(g)
    return len(cls) - len(set(cls))
