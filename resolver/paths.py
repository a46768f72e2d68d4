"""Member paths: `task_struct.files`, `sock.__sk_common.skc_family`, `fdtable.fd[3]`,
`struct file.f_path.dentry`, `task_struct->files->fdt`.

Grammar (C-like):
    path  := root step+
    root  := ['struct ' | 'union '] IDENT
    step  := ('.' | '->') IDENT ('[' INT ']')*

`.` steps stay inside the current object (offsets add); `->` follows a pointer and starts a
new hop.  The first separator after the root may be either (`task_struct->files` reads as
"given a `struct task_struct *`").  Parsing is pure: no DB access here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from .errors import BadPath

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_ROOT_RE = re.compile(rf"\s*(?:(struct|union)\s+)?({_IDENT})\s*")
_STEP_RE = re.compile(rf"\s*(\.|->)\s*({_IDENT})((?:\s*\[\s*\d+\s*\])*)\s*")
_INDEX_RE = re.compile(r"\[\s*(\d+)\s*\]")

_SIMPLE_RE = re.compile(rf"{_IDENT}(?:\.{_IDENT})+")     # a.b.c: the common case, no regex walk
MAX_PATH_LEN = 1024
MAX_STEPS = 64


@dataclass(frozen=True)
class Step:
    sep: str                 # '.' or '->'
    name: str
    indexes: tuple = ()      # array subscripts, outermost first

    def text(self) -> str:
        return self.name + "".join(f"[{i}]" for i in self.indexes)


@dataclass(frozen=True)
class MemberPath:
    text: str
    root_kind: Optional[str]     # 'struct' / 'union' when spelled, else None
    root: str
    steps: tuple

    def hops(self) -> list:
        """Steps grouped per pointer hop: a new hop starts at every `->` except the first step."""
        out: list = []
        for i, s in enumerate(self.steps):
            if i == 0 or s.sep == ".":
                if not out:
                    out.append([])
                out[-1].append(s)
            else:
                out.append([s])
        return out


def parse_path(text: str) -> MemberPath:
    if not isinstance(text, str):
        raise BadPath(f"member path must be a string, not {type(text).__name__}")
    if len(text) > MAX_PATH_LEN:
        raise BadPath(f"member path longer than {MAX_PATH_LEN} characters")
    if _SIMPLE_RE.fullmatch(text):
        root, *names = text.split(".")
        if len(names) <= MAX_STEPS:
            return MemberPath(text, None, root, tuple(Step(".", n) for n in names))
    m = _ROOT_RE.match(text)
    if not m:
        raise BadPath(f"bad member path {text!r}: expected TYPE.member (e.g. task_struct.files)")
    root_kind, root = m.group(1), m.group(2)
    pos = m.end()
    steps = []
    while pos < len(text):
        sm = _STEP_RE.match(text, pos)
        if not sm or sm.end() == pos:
            raise BadPath(f"bad member path {text!r} at column {pos + 1}: "
                          f"expected '.member' or '->member'")
        idx = tuple(int(x) for x in _INDEX_RE.findall(sm.group(3) or ""))
        steps.append(Step(sm.group(1), sm.group(2), idx))
        pos = sm.end()
        if len(steps) > MAX_STEPS:
            raise BadPath(f"member path has more than {MAX_STEPS} steps")
    if not steps:
        raise BadPath(f"bad member path {text!r}: no member after the type "
                      f"(write {root}.member)")
    return MemberPath(text.strip(), root_kind, root, tuple(steps))
