"""Who will read the BTF we write, and what that reader understands.

A BTF file handed to libbpf (`btf_custom_path`, libbpf 0.5+) is parsed by libbpf in user
space only, so the consumer's libbpf version limits the kinds; BTF loaded into a kernel
(`BPF_BTF_LOAD`) must pass that kernel's checks.  The versions below are when each kind or
flag became acceptable:

    feature                          kernel   libbpf
    BTF itself                       4.18     -
    FUNC / FUNC_PROTO, kind_flag     5.0      (always)
    VAR / DATASEC                    5.2      (always)
    FUNC linkage other than static   5.6      (always)
    FLOAT                            5.13     0.4
    DECL_TAG                         5.16     0.6
    TYPE_TAG                         5.17     0.6
    ENUM64, signed enums (kind_flag) 6.0      1.0

`--profile current` (the default) uses everything; `libbpf-X.Y` and `kernel-X.Y` keep to
what that version accepts.  `fit` rewrites a graph for a profile and says what it changed:
a FLOAT becomes an INT of its size (what pahole does without --btf_gen_floats), TYPE_TAGs and
DECL_TAGs are dropped, a 64-bit enum keeps the enumerators whose value fits 32 bits and loses
the others (an enum-value relocation on those then fails instead of reading a wrong value),
VAR/DATASEC are dropped, and without FUNC_PROTO a function pointer becomes `void *`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from .. import model as M
from ..errors import CorruptDB, InputError


@dataclass(frozen=True)
class Profile:
    name: str
    func: bool = True           # FUNC / FUNC_PROTO
    kind_flag: bool = True      # bitfield sizes in struct members, FWD union
    datasec: bool = True        # VAR / DATASEC
    func_global: bool = True    # FUNC linkage global
    float: bool = True
    decl_tag: bool = True
    type_tag: bool = True
    enum64: bool = True
    enum_signed: bool = True


CURRENT = Profile("current")

# (version, feature) thresholds
_KERNEL = ((5, 0), "func", (5, 0), "kind_flag", (5, 2), "datasec", (5, 6), "func_global",
           (5, 13), "float", (5, 16), "decl_tag", (5, 17), "type_tag", (6, 0), "enum64",
           (6, 0), "enum_signed")
_LIBBPF = ((0, 4), "float", (0, 6), "decl_tag", (0, 6), "type_tag", (1, 0), "enum64",
           (1, 0), "enum_signed")
_NAME = re.compile(r"^(kernel|libbpf)-(\d+)\.(\d+)$")
NAMES_HELP = "current, libbpf-X.Y (e.g. libbpf-0.5) or kernel-X.Y (e.g. kernel-5.4)"


def profile(name: str) -> Profile:
    """The profile called `name` (InputError for an unknown or unusable one)."""
    if name in ("current", "", None):
        return CURRENT
    m = _NAME.match(name)
    if not m:
        raise InputError(f"unknown BTF profile {name!r} (use {NAMES_HELP})")
    who, version = m.group(1), (int(m.group(2)), int(m.group(3)))
    if who == "libbpf":
        if version < (0, 5):
            raise InputError(f"profile {name}: libbpf reads an external BTF file "
                             f"(btf_custom_path) only from 0.5 on")
        table = _LIBBPF
    else:
        if version < (4, 18):
            raise InputError(f"profile {name}: kernels before 4.18 do not load BTF; for "
                             f"libbpf CO-RE on such a kernel use --profile libbpf-X.Y")
        table = _KERNEL
    off = {feat for i, feat in enumerate(table[1::2]) if version < table[2 * i]}
    return Profile(name, **{feat: False for feat in off})


def fit(g: M.TypeGraph, p: Profile) -> tuple:
    """(graph, notes): `g` rewritten so a reader of profile `p` accepts it; `g` itself is not
    changed.  Notes are one-line sentences saying what was changed and how often."""
    if p == CURRENT:
        return g, []
    notes = []
    types = [_clone(t) for t in g.types]
    functions = [M.Function(f.name, f.proto, f.static, f.file, f.line, f.module)
                 for f in g.functions]
    variables = list(g.variables)
    datasecs = list(g.datasecs)
    decl_tags = list(g.decl_tags)
    if not p.float:
        floats = [t for t in types if t.kind == M.FLOAT]
        for t in floats:
            t.kind, t.signed, t.encoding = M.INT, False, "unsigned"
        if floats:
            notes.append(f"{len(floats)} FLOAT types written as INT of the same size")
    bypass = list(range(len(types)))        # type id -> what references to it become
    if not p.type_tag:
        tags = [tid for tid, t in enumerate(types) if t.kind == M.TYPE_TAG]
        for tid in tags:
            bypass[tid] = types[tid].ref or 0
        if tags:
            notes.append(f"{len(tags)} TYPE_TAGs dropped (references go to the tagged type)")
    if not p.func:
        protos = [tid for tid, t in enumerate(types) if t.kind == M.FUNC_PROTO]
        for tid in protos:
            bypass[tid] = 0
        if protos:
            notes.append(f"{len(protos)} FUNC_PROTOs and {len(functions)} FUNCs dropped "
                         f"(function pointers become void *)")
        functions = []
    if not p.decl_tag or not p.func:
        if decl_tags:
            notes.append(f"{len(decl_tags)} DECL_TAGs dropped")
        decl_tags = []
    if not p.datasec:
        if variables or datasecs:
            notes.append(f"{len(variables)} VARs and {len(datasecs)} DATASECs dropped")
        variables, datasecs = [], []
    elif not p.func:
        datasecs = [M.DataSec(d.name, d.size, [e for e in d.entries if e[0] != "func"])
                    for d in datasecs]
    if not p.enum64:
        lost, enums = 0, 0
        for t in types:
            if t.kind == M.ENUM and (t.size or 4) > 4 and t.enumerators:
                keep = [(n, v) for n, v in t.enumerators if -(1 << 31) <= v < (1 << 32)]
                if len(keep) != len(t.enumerators):
                    lost += len(t.enumerators) - len(keep)
                    enums += 1
                    t.enumerators = keep
        if lost:
            notes.append(f"{lost} enumerators of {enums} 64-bit enums dropped (their values "
                         f"do not fit the 32 bits this consumer reads)")
    if not p.kind_flag:
        unions = sum(1 for t in types if t.kind == M.FWD and t.encoding == M.UNION)
        if unions:
            notes.append(f"{unions} union forward declarations written as struct ones "
                         f"(no kind_flag)")
        tmp = M.TypeGraph(types=types, ptr_size=g.ptr_size)
        full = sum(1 for t in types if t.kind in M.COMPOSITE for m in t.members or ()
                   if m.bit_size and m.bit_size == 8 * (tmp.sizeof(m.type) or 0))
        if full:
            notes.append(f"{full} bitfields as wide as their type read back as plain "
                         f"members (BTF without kind_flag cannot tell them apart)")
    out = M.TypeGraph(types=types, functions=functions, variables=variables,
                      datasecs=datasecs, decl_tags=decl_tags, source=g.source,
                      ptr_size=g.ptr_size)
    if bypass != list(range(len(types))):
        out = _without(out, bypass)
    return out, notes


def _clone(t: M.Type) -> M.Type:
    return M.Type(t.kind, t.name, t.size, t.ref,
                  members=None if t.members is None else
                  [M.Member(m.name, m.type, m.bit_offset, m.bit_size) for m in t.members],
                  enumerators=None if t.enumerators is None else list(t.enumerators),
                  nelems=t.nelems,
                  params=None if t.params is None else
                  [M.Param(p.name, p.type) for p in t.params],
                  variadic=t.variadic, signed=t.signed, encoding=t.encoding, origin=t.origin)


def _without(g: M.TypeGraph, bypass: list) -> M.TypeGraph:
    """`g` without the types whose bypass is not themselves: references to them go where
    their bypass chain ends; the other ids are renumbered densely."""
    n = len(g.types)

    def final(r):
        for _ in range(n + 1):
            b = bypass[r]
            if b == r:
                return r
            r = b
        raise CorruptDB(f"type id {r}: a chain of type tags loops")
    kept = [tid for tid in range(n) if bypass[tid] == tid]
    new = [0] * n
    for i, tid in enumerate(kept):
        new[tid] = i
    m = [new[final(tid)] for tid in range(n)]
    for t in g.types:
        if t.ref is not None:
            t.ref = m[t.ref]
        for mem in t.members or ():
            mem.type = m[mem.type]
        for prm in t.params or ():
            prm.type = m[prm.type]
    g.types = [g.types[tid] for tid in kept]
    for f in g.functions:
        f.proto = m[f.proto]
    g.variables = [M.Variable(v.name, m[v.type], v.linkage) for v in g.variables]
    g.decl_tags = [M.DeclTag(d.value, d.target_kind, m[d.target] if d.target_kind == "type"
                             else d.target, d.component) for d in g.decl_tags]
    return g
