"""Go functions: `P` at the entry, `R` as a plain probe at every RET (never a uretprobe).

Arguments (resolver/uprobe/abi.py): `%N` is argument word N (a register in Go's register
ABI, a stack slot before it); at a RET, with the register ABI, `%N` and `$retval` (= word 0)
are the result registers; with the stack ABI the results sit in the frame after the
arguments, so `$retval` needs the argument words to be known and is refused — `%N` names any
frame word there.  `%ax`-style register names and `$stackN` are passed through.

Types: `!(*pkg.T)%N` or `(*pkg.T)%N` casts a word; the receiver of a method `pkg.(*T).M` is
`*pkg.T` without a cast; a cast may also follow a member (`.!(*net.TCPConn)data`), as in the
kernel syntax.  Each member step is resolved by gotypes.py and its source is reported.
"""
from __future__ import annotations

import re
from typing import List, Optional, Tuple

from dbhive.errors import ExprError, NoSuchFunction

from ..expr import FETCH_BITS, _RE_COMM, named_arg
from ..golang import quirks
from . import abi
from .gotypes import GoMember, GoType, GoTypes, parse_type

_HEAD = re.compile(r"(?P<fmt>[SUX]?)(?:[!]?\((?P<cast>[^()]*)\))?"
                   r"(?P<base>%[A-Za-z0-9]+|\$retval|\$stack\d*|\$comm)(?P<chain>.*)")
_RECEIVER = re.compile(r"^(?P<pkg>.*)\.\(\*(?P<type>[A-Za-z_][A-Za-z0-9_]*)(?:\[.*\])?\)\.")


def translate_go(b, i: int, line: str, res: dict, flt: str) -> list:
    from ..golang.report import analyze_go_binary
    from .probe import UProbe
    func = res["func"]
    rep = analyze_go_binary(b.path, symbols=[func], offsets=[], itabs=[])
    sym = rep.symbols.get(func)
    if sym is None:
        raise NoSuchFunction(f"{func}: no such function in {b.path} (Go {rep.version or '?'}; "
                             f"looked in its symbol table and pclntab)")
    vt = rep.version_tuple
    reg_abi = quirks.register_abi(b.arch, vt)
    facts = {"binary": b.path, "arch": b.arch, "build_id": b.build_id, "language": "go",
             "go_version": rep.version, "go_version_source": rep.version_source,
             "abi": "register" if reg_abi else "stack", "function": func,
             "address": sym["address"], "size": sym["size"], "symbol_source": sym["source"],
             "file_offset": sym["file_offset"], "args": {}, "members": []}
    deps = dict((rep.modules or {}).get("deps") or {})
    ctx = _GoArgs(b, func, reg_abi, vt is not None, GoTypes(b, rep.version, deps), facts)
    if res["type"] == "P":
        off = sym["file_offset"] + res["plus"]
        if res["plus"] and res["plus"] >= sym["size"]:
            raise NoSuchFunction(f"{func}+{res['plus']:#x}: past the end of {func} "
                                 f"({sym['size']} bytes)")
        if not res["plus"] and sym.get("entry_probe") not in (None, sym["file_offset"]):
            off = sym["entry_probe"]         # after the stack check: fires once per call
            facts["after_stack_check"] = off - sym["file_offset"]
            facts["probe_address"] = sym["address"] + facts["after_stack_check"]
        text = "p:p%d %s:0x%x" % (i, b.path, off) + ctx.args(res["args"], at_return=False,
                                                          in_body=bool(res["plus"]))
        facts["probe"] = "uprobe"
        return [UProbe("P", text, flt, line, facts, list(ctx.notes))]
    if res["plus"]:
        raise ExprError(f"R takes a function, not {func}+{res['plus']:#x}")
    rets = sym.get("returns")
    if rets is None:
        raise ExprError(f"{func}: cannot find its RET instructions on {b.arch}")
    if not rets:
        raise ExprError(f"{func} has no RET instruction (it never returns): an R probe would "
                        f"never fire")
    fetch = ctx.args(res["args"], at_return=True, in_body=True)
    facts["probe"] = "uprobe at every RET (Go: never a uretprobe)"
    facts["returns"] = rets
    out = []
    for k, off in enumerate(rets):
        text = "p:r%d_%d %s:0x%x%s" % (i, k, b.path, off, fetch)
        out.append(UProbe("R", text, flt, line, dict(facts, ret_index=k, file_offset=off),
                          list(ctx.notes)))
    return out


class _GoArgs:
    def __init__(self, b, func: str, reg_abi: bool, version_known: bool, types: GoTypes,
                 facts: dict):
        self.b, self.func, self.reg_abi = b, func, reg_abi
        self.version_known = version_known
        self.types = types
        self.facts = facts
        self.notes: List[str] = []
        self._unknown = ""

    def args(self, exprs, at_return: bool, in_body: bool) -> str:
        text, seen = "", []
        for e in exprs:
            var, expr = named_arg(e, seen)
            fetch = "$comm" if _RE_COMM.fullmatch(e) else self.arg(var, expr, at_return, in_body)
            self.facts["args"][var] = fetch
            text += " %s=%s" % (var, fetch)
        return text

    # ---- one argument ------------------------------------------------------------------------
    def _word(self, n: int, what: str) -> str:
        if not self.version_known:
            raise ExprError(f"{what}: the Go version of {self.b.path} is unknown, so is its "
                            f"ABI (registers or stack)")
        text, why = abi.go_word(self.b.arch, self.reg_abi, n)
        if why:
            raise ExprError(f"{what}: {why}")
        return text

    def arg(self, var: str, expr: str, at_return: bool, in_body: bool) -> str:
        m = _HEAD.fullmatch(expr)
        if not m:
            raise ExprError(f"error in expr {var}={expr}: expected var=[S|U|X][(type)]%N|%reg|"
                            f"$retval[->member...]")
        fmt = (m.group("fmt") or "u").lower()
        base, chain, cast = m.group("base"), m.group("chain"), m.group("cast")
        start: Optional[GoType] = parse_type(cast) if cast else None
        if base == "$comm":
            raise ExprError(f"{var}: $comm takes no cast or member")
        if base.startswith("$stack"):
            text = base
        elif base == "$retval":
            if not at_return:
                raise ExprError(f"{var}: $retval is only known in an R probe")
            if not self.reg_abi:
                raise ExprError(f"{var}: with Go's stack ABI (before Go 1.17 amd64 / 1.18 arm64) "
                                f"results follow the arguments in the frame: name the result's "
                                f"word, %N (N = argument words + result index)")
            text = self._word(0, f"{var}=$retval")
        else:
            reg = base[1:]
            if reg.isdigit():
                n = int(reg)
                text = self._word(n, f"{var}=%{n}")
                if start is None and n == 0 and not at_return and not in_body:
                    start = self._receiver()
            elif re.fullmatch(r"[a-z][a-z0-9]*", reg):
                text = base
            else:
                raise ExprError(f"{var}: {base} is not a register or argument word")
        if not chain:
            return self._suffix(text, start, fmt, var)
        if start is None:
            raise ExprError(f"{var}: {base} has no known Go type to walk members of: cast it, "
                            f"e.g. !(*crypto/tls.Conn){base}{chain}")
        return self._walk(var, text, start, chain, fmt)

    def _receiver(self) -> Optional[GoType]:
        """`pkg.(*T).M`: the first word is a *pkg.T."""
        m = _RECEIVER.match(self.func)
        if not m:
            return None
        return GoType("ptr", f"*{m.group('pkg')}.{m.group('type')}", 8,
                      elem=f"{m.group('pkg')}.{m.group('type')}")

    def _steps(self, chain: str) -> List[Tuple[str, str, Optional[str]]]:
        out, i = [], 0
        while i < len(chain):
            if chain.startswith("->", i):
                sep, i = "->", i + 2
            elif chain[i] == ".":
                sep, i = ".", i + 1
            else:
                raise ExprError(f"bad member chain {chain!r}")
            cast = None
            if chain.startswith("!(", i) or chain.startswith("(", i):
                j = chain.index("(", i)
                k = chain.find(")", j)
                if k < 0:
                    raise ExprError(f"bad cast in {chain!r}")
                cast, i = chain[j + 1:k], k + 1
            m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", chain[i:])
            if not m:
                raise ExprError(f"empty or bad member name in {chain!r}")
            out.append((sep, m.group(0), cast))
            i += m.end()
        return out

    def _walk(self, var: str, text: str, cur: GoType, chain: str, fmt: str) -> str:
        what = text
        group: Optional[int] = None
        for sep, name, cast in self._steps(chain):
            if sep == "->":
                if cur.kind != "ptr":
                    raise ExprError(f"{what} is {cur.name}, not a pointer: use '.'")
                if group is not None:
                    text = "+0x%x(%s)" % (group, text)
                owner = parse_type(cur.elem or "")
                mem, key = self.types.member(owner, name)
                group = mem.offset
            else:
                if group is None:
                    raise ExprError(f"{what}: a register or stack word holds a pointer or a "
                                    f"scalar: the first step must be '->'")
                if cur.kind == "ptr":
                    raise ExprError(f"{what} is a pointer ({cur.name}): use '->'")
                mem, key = self.types.member(cur, name)
                group += mem.offset
            self._record(var, key, mem)
            what = f"{what}{sep}{name}"
            if cast is not None:
                cur = parse_type(cast)
            elif mem.type is None:
                cur = GoType("other", "?", None)
                self._unknown = f"{key} (only {mem.source} knows it: give its type with a cast)"
            else:
                cur = mem.type
        if group is not None:
            text = "+0x%x(%s)" % (group, text)
        if cur.name == "?":
            raise ExprError(f"{var}: the type of {self._unknown}")
        return self._suffix(text, cur, fmt, var)

    def _record(self, var: str, key: str, mem: GoMember) -> None:
        entry = {"var": var, "member": key, "offset": mem.offset, "source": mem.source}
        if mem.checked:
            entry["checked"] = mem.checked
        if mem.conflicts:
            entry["conflicts"] = mem.conflicts
        self.facts["members"].append(entry)
        note = f"{var}: {mem.describe(key)}"
        if note not in self.notes:
            self.notes.append(note)

    def _suffix(self, text: str, t: Optional[GoType], fmt: str, var: str) -> str:
        if t is None:
            return text + ":%s64" % fmt
        t = self.types.resolve(t)
        if t.kind in ("ptr", "scalar", "other") and t.size in FETCH_BITS:
            return text + ":%s%d" % (fmt, FETCH_BITS[t.size])
        if t.kind == "string":
            raise ExprError(f"{var} is a Go string (not NUL-terminated): fetch .str and .len")
        raise ExprError(f"{var} is {t.name} ({t.size if t.size is not None else '?'} bytes): "
                        f"fetch a member of it")
