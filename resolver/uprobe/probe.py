"""`P <binary>:<func>[+off] args…` and `R …` (surftrace's user-space probes) -> uprobe_events
lines.

C (and any binary with DWARF that is not Go): the arguments are translated by the kernel
side's translator (resolver.expr) over the binary's own types, so `%0->in.tag`, casts,
`:string`, sizes and signedness, `$retval` and bitfields behave exactly as for kernel
probes; the probe address is the function's file offset.  `R` is a uretprobe (`r:`).

Go: `R` is never a uretprobe (Go moves goroutine stacks; the return trampoline crashes the
program): it becomes a plain `p:` probe at every RET instruction of the function
(resolver.golang finds them), named r<i>_<k>.  Arguments follow Go's ABI (resolver/uprobe/
abi.py), member chains are resolved by resolver/uprobe/gotypes.py with each step's source.

The printed line follows the surftrace client's `-S` text where the client has one:
`p:p0  /path:0x<offset> var=fetch…` (the client prints two spaces, and 0x0 for every offset:
its ELF symbol reader is a stub, a defect not copied).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional

from dbhive.errors import ExprError

from ..expr import Probe, RESERVED_VARS, _Func, named_arg, _P, _Translator, split_words, translate_filter
from . import abi
from .binary import DEFAULT_DEBUG_DIRS, UserBinary

_SYMBOL = re.compile(r"(?P<func>[^\s+]+?)(?:\+(?P<off>0x[0-9a-fA-F]+|\d+))?")


@dataclass
class UProbe(Probe):
    """A uprobe line plus the facts behind it (--json) and notes for people (where each Go
    member offset came from)."""
    facts: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)

    def surftrace_dict(self) -> dict:
        """What `surftrace -S` prints for this probe (its spacing; our offset)."""
        head, _, rest = self.line.partition(" ")
        return {"type": self.source.split(None, 1)[0] if self.source else self.type,
                "fxpr": f"{head}  {rest}", "filter": self.filter}

    def as_dict(self) -> dict:
        d = super().as_dict()
        d["facts"] = self.facts
        if self.notes:
            d["notes"] = self.notes
        return d


def is_uprobe_line(line: str) -> bool:
    ws = line.split(None, 1)
    return bool(ws) and ws[0] in ("P", "R")


def split_uprobe(line: str) -> dict:
    ws = split_words(line)
    if len(ws) < 2 or ws[0] not in ("P", "R"):
        raise ExprError(f"{line!r}: expected '<P|R> <binary>:<func>[+off] [var=expr ...] "
                        f"[f:filter]'")
    target = ws[1]
    binary, sep, symbol = target.partition(":")
    if not sep or not binary or not symbol:
        raise ExprError(f"{target!r}: expected <binary>:<function>, e.g. /usr/bin/app:main")
    m = _SYMBOL.fullmatch(symbol)
    if not m:
        raise ExprError(f"bad function {symbol!r} (func or func+offset)")
    args, flt = ws[2:], ""
    if args and args[-1].startswith("f:"):
        flt, args = args[-1][2:], args[:-1]
    plus = m.group("off")
    return {"type": ws[0], "binary": binary, "func": m.group("func"),
            "plus": int(plus, 0) if plus else 0, "args": args, "filter": flt}


class UprobeTranslator:
    """Translates P/R lines; binaries are opened once per translator."""

    def __init__(self, compat: bool = False, debug_dirs=DEFAULT_DEBUG_DIRS,
                 cwd: Optional[str] = None):
        self.compat = compat
        self.debug_dirs = tuple(debug_dirs)
        self.cwd = cwd
        self._binaries: dict = {}

    def close(self) -> None:
        for b in self._binaries.values():
            b.close()
        self._binaries.clear()

    def binary(self, spec: str) -> UserBinary:
        b = self._binaries.get(spec)
        if b is None:
            b = self._binaries[spec] = UserBinary.open(spec, self.debug_dirs, self.cwd)
        return b

    def translate(self, i: int, line: str) -> List[UProbe]:
        res = split_uprobe(line)
        flt = translate_filter(res["filter"]) if res["filter"] else ""
        b = self.binary(res["binary"])
        if b.is_go():
            from .goprobe import translate_go
            return translate_go(b, i, line, res, flt)
        return [self._translate_c(b, i, line, res, flt)]

    # ---- C ------------------------------------------------------------------------------------
    def _translate_c(self, b: UserBinary, i: int, line: str, res: dict, flt: str) -> UProbe:
        kind = res["type"].lower()
        site = b.function(res["func"], res["plus"])
        in_body = bool(res["plus"])
        head = "%s:%s%d %s:0x%x" % (kind, kind, i, b.path, site.file_offset)
        facts = {"binary": b.path, "arch": b.arch, "build_id": b.build_id, "language": "c",
                 "function": res["func"], **site.as_dict(), "probe": "uretprobe"
                 if kind == "r" else "uprobe", "args": {}}
        if not res["args"]:
            return UProbe(res["type"], head, flt, line, facts)
        if b.dwarf_path() is None:
            raw = self._untyped_args(b, res["args"], kind)
            if raw is not None:          # nothing needs a type: no DWARF needed either
                facts["args"] = dict(raw)
                facts["types"] = None
                return UProbe(res["type"], head + "".join(f" {v}={f}" for v, f in raw), flt,
                              line, facts)
        src = b.types(f"for the arguments of {res['func']}")
        facts["types"] = src.path
        func, dwarf_name = self._c_function(b, src, site)
        facts["dwarf_function"] = dwarf_name
        from ..api import Resolver
        tr = _Translator(Resolver(src), b.arch, self.compat)
        tr._fdb = src
        tr.where = f"in {b.path}"
        text, seen = head, []
        for e in res["args"]:
            var, expr = named_arg(e, seen)
            self._check_c_arg(b, src, func, expr, kind, in_body)
            fetch = tr.arg(e, kind, in_body, func)
            facts["args"][var] = fetch
            text += " %s=%s" % (var, fetch)
        return UProbe(res["type"], text, flt, line, facts)

    def _untyped_args(self, b: UserBinary, args, kind: str) -> Optional[list]:
        """[(var, fetch)] when every argument is a bare register/argument word, $retval,
        $comm or $stackN (fetched as a 64-bit word), else None (types are needed)."""
        out, seen = [], set()
        for e in args:
            m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=([SUX]?)(%\w+|\$retval|\$comm|"
                             r"\$stack\d*)", e)
            if not m or m.group(1) in seen or m.group(1) in RESERVED_VARS:
                return None
            var, fmt, base = m.groups()
            seen.add(var)
            if base.startswith("%"):
                reg = base[1:]
                if reg.isdigit():
                    reg = abi.c_arg(b.arch, int(reg))
                    if reg is None:
                        return None
                    reg = reg[1:]
                out.append((var, f"%{reg}:{(fmt or 'u').lower()}64"))
            elif base == "$retval" and kind != "r":
                return None
            else:
                out.append((var, base))
        return out

    def _c_function(self, b: UserBinary, src, site) -> tuple:
        """(_Func, DWARF name) of the function at `site`: by its name, else by another symbol
        at the same address (libraries export aliases: fputs is _IO_fputs's)."""
        names = [site.name] + [n for n in b.aliases(site.address) if n != site.name]
        for n in names:
            rows = src.functions(n)
            if rows:
                (fname, proto, _static, _file, _line, _module) = rows[0]
                params = [_P(src.spelling(t), t) for (_n, t) in src.params(proto)]
                return _Func(fname, params, src.type(proto).ref), fname
        raise ExprError(f"{site.name}: {src.path} has no DWARF description of it (nor of an "
                        f"alias at its address: {', '.join(names[1:]) or 'none'}), so its "
                        f"argument types are unknown")

    def _check_c_arg(self, b: UserBinary, src, func, expr: str, kind: str, in_body: bool):
        """`%N` is the Nth integer argument register: refuse where that is not argument N."""
        m = re.match(r"[SUX]?(?:[!@]?\(.*?\)(?:l[234])?)?%(\d+)", expr)
        if not m or in_body or kind != "p":
            return
        n = int(m.group(1))
        if n >= len(abi.C_ARG_REGS[b.arch]):
            raise ExprError(f"argument %{n} of {func.name} is passed on the stack ({b.arch} "
                            f"passes {len(abi.C_ARG_REGS[b.arch])} in registers)")
        for k, p in enumerate(func.params[:n + 1]):
            t = src.type(src.strip(p.type_id))
            if t.kind in ("float", "struct", "union") or (t.kind == "int" and (t.size or 0) > 8):
                what = "a struct/union passed by value" if t.kind != "float" else "floating point"
                raise ExprError(f"argument {k} of {func.name} ({p.type}) is {what}: %{n} is not "
                                f"in the {n}th integer register; name the register instead "
                                f"(e.g. %{abi.C_ARG_REGS[b.arch][0]}) with a cast")


__all__ = ["UProbe", "UprobeTranslator", "is_uprobe_line", "split_uprobe", "RESERVED_VARS"]
