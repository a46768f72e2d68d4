"""Function prototypes of an ELF file from dwarves' `pfunct` (an independent DWARF reader),
and its function symbols from binutils' `readelf`: the oracles for the functions a kernel
module's DB holds.

    pfunct_prototypes(path) -> ({name: {(ret, args)}}, {name: {(ret, args)}} inline-only)
        `pfunct --no_parm_names --prototypes`; pfunct also prints inline-only functions
        (prefixed `inline `), which have no code of their own and are not in our DBs.
    function_symbols(path) -> {name}
        defined STT_FUNC symbols (`readelf -sW`) with GCC's clone suffixes (.cold, .isra.0,
        .constprop.0, .part.0) cut: the functions that have code.
    check_functions(graph, path, module) -> [problem, ...]
        each of ours must be one of pfunct's prototypes of that name, and every function with
        code that pfunct knows must be ours, except `init_module` / `cleanup_module` (aliases
        of the module's init/exit functions, which are ours under their own names) and the
        static call trampolines `__SCT__*` (no definition in the DWARF, only declarations).

Comparing spellings: runs of blanks become one, `* *` is `**`, `*const` is `* const`; a
parameter's top-level qualifier is dropped (`const int n`, `char *const p`: C11 6.7.6.3p15,
not part of the function's type — a header's declaration and the definition may differ in
it, and pfunct prints either).  pfunct 1.24 quirks, met on the Debian 6.1 modules, are
matched as pfunct prints them (like pahole's, tests/support/pahole_oracle.py):
  * a parameter `T *const` prints as `const T *`;
  * a pointer to an array `T (*)[N]` prints as `T *`;
  * a pointer to a pointer to a function `R (**)(A)` prints as `R ()(A) **`.
`check_functions(..., typedefs=...)` additionally accepts a prototype that equals pfunct's
once typedef names are replaced by what they name (a declaration in a header may say
`struct xfs_da_args *` where the definition says `xfs_da_args_t *`); those are counted in
`stats["typedef"]`, exact matches in `stats["exact"]`.  When a module has several static
functions of one name, pfunct prints only some: if each it printed is one of ours, ours it
did not print are counted in `stats["unprinted"]`, not reported.
"""
from __future__ import annotations

import re
import subprocess

from tests.support import need_tool

ALIASES = {"init_module", "cleanup_module"}
# static call trampolines: 8-byte jumps the assembler makes, whose only DWARF is the C
# declaration `extern typeof(fn) __SCT__fn` (pfunct prints declarations too)
NO_DEFINITION_PREFIXES = ("__SCT__",)
_QUAL_AFTER_STAR = re.compile(r"\*\s*(const|volatile|restrict)\b")


def normalize(text: str) -> str:
    t = re.sub(r"\s+", " ", text).strip()
    while "* *" in t:
        t = t.replace("* *", "**")
    t = _QUAL_AFTER_STAR.sub(r"* \1", t)
    t = re.sub(r"\*\s*\(", "* (", t)                 # `T *(*)(A)`, pfunct: `T * (*)(A)`
    return t.replace(" ,", ",").replace(" )", ")")


def split_params(args: str) -> list:
    """`a, b (*)(c, d), e` -> ['a', 'b (*)(c, d)', 'e'] (commas inside parentheses kept)."""
    out, depth, cur = [], 0, []
    for ch in args:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur).strip())
    return [p for p in out if p]


def top_level_unqualified(p: str) -> str:
    """A parameter's type without its top-level qualifiers."""
    p = normalize(p)
    while True:
        m = re.fullmatch(r"(.*\*) (const|volatile|restrict)", p)
        if m:
            p = m.group(1)
            continue
        m = re.fullmatch(r"(const|volatile) (.*)", p)
        if m and not re.search(r"[*\[(]", m.group(2)):
            p = m.group(2)
            continue
        return p


def _pfunct_spellings(p: str) -> set:
    """How pfunct prints parameter `p` (ours, normalized): the exact spelling and its quirks."""
    p = normalize(p)
    out = {top_level_unqualified(p)}
    m = re.fullmatch(r"(.*\S) \* const", p)
    if m:
        out.add(normalize(f"const {m.group(1)} *"))
    m = re.fullmatch(r"(.*\S) \(\*\)\[\d*\]", p)
    if m:
        out.add(normalize(f"{m.group(1)} *"))
    m = re.fullmatch(r"(.*\S) \((\*+)\)(\(.*\))", p)
    if m and len(m.group(2)) > 1:
        out.add(normalize(f"{m.group(1)} (){m.group(3)} {m.group(2)}"))
    return out


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
    """Names of the defined STT_FUNC symbols (clone suffixes cut)."""
    need_tool("readelf")
    out = subprocess.run(["readelf", "-sW", path], capture_output=True, text=True,
                         check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(parts) >= 8 and parts[3] == "FUNC" and parts[6] != "UND":
            names.add(parts[7].split(".", 1)[0])
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


def _expand(text: str, typedefs: dict) -> str:
    """Typedef names replaced by what they name (repeatedly, a few levels)."""
    for _ in range(8):
        new = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: typedefs.get(m.group(0), m.group(0)), text)
        if new == text:
            return new
        text = new
    return text


def _same(ours: tuple, theirs: tuple, typedefs: dict = None) -> bool:
    ret, args = ours
    tret, targs = theirs
    if typedefs is not None:
        ret, args = _expand(ret, typedefs), _expand(args, typedefs)
        tret, targs = _expand(tret, typedefs), _expand(targs, typedefs)
    if normalize(ret) != normalize(tret):
        return False
    mine, their = split_params(args), split_params(targs)
    if len(mine) != len(their):
        return False
    return all(top_level_unqualified(t) in _pfunct_spellings(m) for m, t in zip(mine, their))


def typedef_names(graph) -> dict:
    """{typedef name: the C spelling of what it names} (for `check_functions`)."""
    spell = graph.spelling_cache()
    out: dict = {}
    for tid, t in enumerate(graph.types):
        if t.kind == "typedef" and t.name and t.ref is not None:
            out.setdefault(t.name, spell(t.ref))
    return out


def check_functions(graph, path: str, module: str = None, ours: dict = None,
                    typedefs: dict = None, stats: dict = None) -> list:
    """What differs between the functions of `graph` (of `module`) and pfunct + readelf on
    the module file `path`; [] when they agree.  `ours`: `our_prototypes(graph, module)` if
    already made; `typedefs`: `typedef_names(graph)` to accept prototypes equal modulo
    typedef names (counted in `stats`)."""
    ours = our_prototypes(graph, module) if ours is None else ours
    real, inline = pfunct_prototypes(path)
    stats = {} if stats is None else stats
    problems = []
    for name, protos in sorted(ours.items()):
        theirs = real.get(name, set()) | inline.get(name, set())
        unmatched = []
        for proto in sorted(protos):
            if any(_same(proto, t) for t in theirs):
                stats["exact"] = stats.get("exact", 0) + 1
            elif typedefs is not None and any(_same(proto, t, typedefs) for t in theirs):
                stats["typedef"] = stats.get("typedef", 0) + 1
            else:
                unmatched.append(proto)
        if unmatched and len(protos) > len(theirs) and len(protos) - len(unmatched) >= len(theirs):
            # several static functions of one name: pfunct printed fewer of them, and each
            # it printed is one of ours; the others cannot be checked against it
            stats["unprinted"] = stats.get("unprinted", 0) + len(unmatched)
            continue
        for proto in unmatched:
            problems.append(f"{name}: ours {proto}, pfunct {sorted(theirs) or 'nothing'}")
    missing = (function_symbols(path) & set(real)) - set(ours) - ALIASES
    for name in sorted(n for n in missing if not n.startswith(NO_DEFINITION_PREFIXES)):
        problems.append(f"{name}: has code (readelf) and DWARF (pfunct) but is not in the DB")
    return problems
