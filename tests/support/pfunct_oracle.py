"""Function prototypes of an ELF file from dwarves' `pfunct` (an independent DWARF reader),
and its function symbols from binutils' `nm`: the oracles for the functions a kernel
module's DB holds.

    pfunct_prototypes(path) -> {name: {(ret, args), ...}}
        `pfunct --no_parm_names --prototypes`, spellings normalized: runs of blanks become
        one, `* *` becomes `**` (pfunct prints `struct nlattr * *`), no blank before `,`
        or `)`.  pfunct also prints inline-only functions (prefixed `inline `, kept apart
        in `inline_only`), which have no code of their own and are not in our DBs.
    function_symbols(path) -> {name}
        defined text symbols (`nm --defined-only`, types t/T) with GCC's clone suffixes
        (.cold, .isra.0, .constprop.0, .part.0) cut: the functions that have code.
    check_functions(functions, path) -> [problem, ...]
        ours must be what pfunct prints (each prototype one of pfunct's for that name), and
        every function with code must be ours, except `init_module` / `cleanup_module`
        (aliases of the module's init/exit functions, which are ours under their names).
"""
from __future__ import annotations

import re
import subprocess

from tests.support import need_tool

ALIASES = {"init_module", "cleanup_module"}


def normalize(text: str) -> str:
    t = re.sub(r"\s+", " ", text).strip()
    while "* *" in t:
        t = t.replace("* *", "**")
    return t.replace(" ,", ",").replace(" )", ")")


def _split_line(line: str):
    m = re.match(r"^(.*?)\b([A-Za-z_]\w*)\((.*)\);$", line)
    if not m:
        raise ValueError(f"pfunct printed a line this parser does not understand: {line!r}")
    ret, name, args = m.groups()
    return name, normalize(ret), normalize(args)


def pfunct_prototypes(path: str) -> tuple:
    """({name: {(ret, args)}} of functions pfunct prints without `inline`,
    {name: {(ret, args)}} of the inline-only ones)."""
    need_tool("pfunct")
    out = subprocess.run(["pfunct", "--no_parm_names", "--prototypes", path],
                         capture_output=True, text=True, check=True).stdout
    real: dict = {}
    inline: dict = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        is_inline = line.startswith("inline ")
        name, ret, args = _split_line(line[7:] if is_inline else line)
        (inline if is_inline else real).setdefault(name, set()).add((ret, args))
    return real, inline


def function_symbols(path: str) -> set:
    need_tool("nm")
    out = subprocess.run(["nm", "--defined-only", path], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT":
            names.add(parts[2].split(".", 1)[0])
    return names


def our_prototypes(graph, module: str = None) -> dict:
    """{name: {(ret, args)}} of a TypeGraph's functions (of one module), spelled as
    pfunct spells them."""
    out: dict = {}
    for f in graph.functions:
        if module is not None and f.module != module:
            continue
        p = graph.types[f.proto]
        args = [graph.type_name(x.type) for x in p.params or ()]
        if p.variadic:
            args.append("...")
        ret = graph.type_name(p.ref if p.ref is not None else 0)
        out.setdefault(f.name, set()).add((normalize(ret), normalize(", ".join(args) or "void")))
    return out


def check_functions(graph, path: str, module: str = None, ours: dict = None) -> list:
    """What differs between the functions of `graph` (of `module`) and pfunct + nm on the
    module file `path`; [] when they agree.  `ours`: `our_prototypes(graph, module)` if
    already made."""
    ours = our_prototypes(graph, module) if ours is None else ours
    real, inline = pfunct_prototypes(path)
    problems = []
    for name, protos in sorted(ours.items()):
        theirs = real.get(name, set()) | inline.get(name, set())
        for proto in sorted(protos - theirs):
            problems.append(f"{name}: ours {proto}, pfunct {sorted(theirs) or 'nothing'}")
    for name in sorted(function_symbols(path) - set(ours) - ALIASES):
        problems.append(f"{name}: has code (nm) but is not in the DB")
    return problems
