"""A kernel's types as a C header: the vmlinux.h BPF CO-RE programs include (what
`bpftool btf dump file X format c` writes), made from the type model.

    text = render(graph, banner)                 # the header, str
    write(graph, meta, dest)                     # temp file + rename (dbhive.output)
    is_current(dest, meta)                       # written for this DB by this builder?

What the compiler makes of it is the kernel's layout, exactly: every struct and union gets the
size and member offsets (bitfields included) the graph gives.  The compiler is clang with
`-target bpf` (LP64, the System V rules for alignment and bitfields, as GCC uses on x86-64 and
arm64), so the header is for 64-bit kernels only.  How:

  * Definitions come in dependency order.  What a definition holds by value (members, array
    elements, through typedefs) is defined before it; a struct or union it only points to is
    declared first (`struct foo;`), so a function prototype never declares a tag of its own.
  * Each struct is laid out here as the compiler will lay it out (natural alignment; a
    bitfield moves to the next unit of its type rather than straddle one).  Where the kernel
    puts a member further on (an aligned member, a cacheline-aligned struct's tail), unnamed
    bitfields (`long: 64;`) fill the gap: they take space but add no alignment.  Where a
    member sits closer than its alignment allows, or the size is no multiple of it, the
    struct is `__attribute__((packed))` and padded the same way.
  * An enum of 1, 2 or 8 bytes that C would make 4 gets `__attribute__((mode(...)))`
    (clang and GCC both take it).
  * C allows a name once per namespace: a second tag (two layouts of one struct name, a
    struct and a union of one name) or typedef of a name, and an enumerator whose name is
    taken, gets a `___N` suffix, which libbpf's CO-RE ignores when it matches names.
  * Anonymous types are written in place; one a typedef names is spelled by that typedef.
  * BTF's type tags are left out; a forward enum C cannot declare is spelled as the integer
    it is; integers whose name C does not have (GCC's `ssizetype`) are spelled by size.

The first lines name the kernel and the DB's input (`dbhive-header: ...`), so a batch can
tell whether the header in the hive is the one for the DB beside it (`is_current`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from . import __version__, model as M, output
from .errors import FormatError, OutputError

GUARD = "__VMLINUX_H__"
MARKER = "dbhive-header:"
MAX_MARKER_BYTES = 4096
# Definitions nest (a struct holding a struct ...) far less deep than this in real kernels.
MAX_DEPTH = 100

_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto "
    "if inline int long register restrict return short signed sizeof static struct switch "
    "typedef union unsigned void volatile while _Alignas _Alignof _Atomic _Bool _Complex "
    "_Generic _Imaginary _Noreturn _Static_assert _Thread_local asm typeof".split())
# names the compiler defines itself: a kernel typedef of that name is renamed
_BUILTIN_NAMES = ("__builtin_va_list",)
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INT_WORDS = frozenset(("char", "short", "int", "long", "signed", "unsigned", "_Bool",
                        "__int128"))
_BY_SIZE = {1: ("signed char", "unsigned char"), 2: ("short", "unsigned short"),
            4: ("int", "unsigned int"), 8: ("long", "unsigned long"),
            16: ("__int128", "unsigned __int128")}
_ENUM_MODE = {1: "QI", 2: "HI", 4: "SI", 8: "DI"}
_PAD_UNITS = ((64, "long"), (32, "int"), (16, "short"), (8, "char"))
_SIMPLE_QUALIFIERS = (M.CONST, M.VOLATILE, M.RESTRICT)


def render(g: M.TypeGraph, comment: str = "", source: str = "") -> str:
    """The header of every type in `g`, `comment` first (FormatError if some type cannot be
    written in C, OutputError for a kernel that is not 64-bit; `source` names the input in
    their message)."""
    from .btf.dedup import dedup
    where = f"{source}: " if source else ""
    if g.ptr_size != 8:
        raise OutputError(f"{where}a C header is laid out for the 64-bit BPF target; this "
                          f"kernel's pointers are {g.ptr_size} bytes")
    deduped, _ = dedup(g)               # one definition per shape (a DWARF graph has copies)
    try:
        body = _Writer(deduped).write()
    except FormatError as e:
        raise FormatError(f"{where}{e}") from None
    head = f"/* {comment} */\n" if comment else ""
    return (f"{head}#ifndef {GUARD}\n#define {GUARD}\n\n"
            "#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n"
            "#pragma clang attribute push (__attribute__((preserve_access_index)), "
            "apply_to = record)\n#endif\n\n"
            + "\n\n".join(body) +
            "\n\n#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n#pragma clang attribute pop\n#endif\n\n"
            f"#endif /* {GUARD} */\n")


def banner(meta: dict) -> str:
    """The comment the header starts with: the kernel, and what `is_current` checks."""
    def text(key: str, default: str = "") -> str:       # from the input: no `*/`, one line
        return re.sub(r"[^\x20-\x7e]|\*/|/\*", "?", str(meta.get(key) or default))
    kernel = " ".join(x for x in (text("release", "unknown"), text("arch")) if x)
    return (f"vmlinux.h of {kernel} (build-id {text('build_id', '-')}), written by dbhive from "
            f"its {text('type_source')} types\n"
            f" * {MARKER} builder={__version__} source-sha256={text('source_sha256', '-')}")


def write(g: M.TypeGraph, meta: dict, dest: str, source: str = "") -> None:
    """Render and write the header of a kernel (temp file + rename)."""
    output.write_bytes(dest, render(g, banner(meta), source).encode(), mode=0o644)


def is_current(path: str, meta: dict) -> bool:
    """Whether the header at `path` was written by this builder for a DB with `meta` (the
    same input sha256): what `dbhive batch --with-header` skips."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(MAX_MARKER_BYTES).decode("utf-8", "replace")
    except OSError:
        return False
    sha = meta.get("source_sha256")
    want = f"{MARKER} builder={__version__} source-sha256={sha}"
    return bool(sha) and want in head.split(" */", 1)[0]


def _ident(name: Optional[str], fallback: str) -> str:
    """`name` as a C identifier (names from a crafted input may not be)."""
    if not name:
        return fallback
    if _IDENT.match(name) and name not in _KEYWORDS:
        return name
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if clean[0].isdigit():
        clean = "_" + clean
    return clean + "_" if clean in _KEYWORDS else clean


def _unique(name: str, used: dict) -> str:
    """`name`, or `name___N` (N from 2) when it is taken; marks the result taken."""
    if name not in used:
        used[name] = 1
        return name
    n = used[name]
    while True:
        n += 1
        candidate = f"{name}___{n}"
        if candidate not in used:
            used[name] = n
            used[candidate] = 1
            return candidate


def _lp64_size(words: list) -> Optional[int]:
    """sizeof on the target of an integer spelled with these words (None: not one)."""
    if not words or any(w not in _INT_WORDS for w in words):
        return None
    if "_Bool" in words:
        return 1 if words == ["_Bool"] else None
    if "char" in words:
        return 1
    if "short" in words:
        return 2
    if "__int128" in words:
        return 16
    return 8 if "long" in words else 4


def _round_up(n: int, unit: int) -> int:
    return -(-n // unit) * unit


def _pads(cur: int, end: int) -> list:
    """Unnamed bitfields taking bits cur..end, none crossing a unit of its type (so each
    lies exactly where it is put, packed or not): [(type, bits)]."""
    out = []
    while cur < end:
        if cur % 8:
            bits, ty = min(8 - cur % 8, end - cur), "char"
        else:
            bits, ty = next(((b, t) for b, t in _PAD_UNITS if cur % b == 0 and end - cur >= b),
                            (end - cur, "char"))
        out.append((ty, bits))
        cur += bits
    return out


@dataclass
class _Plan:
    """How a struct/union is written: packed or not, its members and paddings in order."""
    packed: bool
    align: int                  # bytes, as the compiler will see it
    items: list                 # M.Member, or ("pad", type, bits), or ("union-pad", bits)


class _Writer:
    def __init__(self, g: M.TypeGraph):
        self.g = g
        self.types = g.types
        self.chunks: list = []
        self.done: set = set()          # ids whose definition is written
        self.busy: set = set()          # ids whose definition is being worked out
        self.declared: set = set()      # tags declared (forward or defined) in the text
        self.aligns: dict = {}
        self.plans: dict = {}
        self.planning: set = set()
        self._names()

    # ---- names --------------------------------------------------------------------------
    def _names(self) -> None:
        types = self.types
        self.tag: dict = {}             # id -> tag of a struct/union/enum (or forward one)
        self.alias: dict = {}           # forward declaration id -> the definition it names
        tags: dict = {}
        first: dict = {}
        for tid, t in enumerate(types):
            if t.name and (t.kind in M.COMPOSITE or (t.kind == M.ENUM and t.enumerators)):
                self.tag[tid] = _unique(_ident(t.name, f"__anon_{tid}"), tags)
                first.setdefault((t.kind, t.name), tid)
        for tid, t in enumerate(types):
            if t.kind == M.FWD or (t.kind == M.ENUM and not t.enumerators):
                kind = (t.encoding or M.STRUCT) if t.kind == M.FWD else M.ENUM
                d = first.get((kind, t.name)) if t.name else None
                if d is not None:
                    self.alias[tid] = d
                elif kind in M.COMPOSITE:
                    self.tag[tid] = _unique(_ident(t.name, f"__anon_{tid}"), tags)
                # else: a forward enum without a definition, spelled as its integer
        self.ordinary: dict = {n: 1 for n in _BUILTIN_NAMES}   # typedefs, enumerators
        self.tdname: dict = {}
        self.named_by: dict = {}        # anonymous struct/union/enum -> the typedef naming it
        for tid, t in enumerate(types):
            if t.kind == M.TYPEDEF and t.name:
                self.tdname[tid] = _unique(_ident(t.name, f"__anon_{tid}"), self.ordinary)
                r = types[t.ref or 0]
                if r.kind in (M.STRUCT, M.UNION, M.ENUM) and not r.name:
                    self.named_by.setdefault(t.ref, tid)

    # ---- the whole file -----------------------------------------------------------------
    def write(self) -> list:
        from .btf.dedup import refs
        used = set()
        for t in self.types:
            used.update(refs(t))
        for tid, t in enumerate(self.types):
            k = t.kind
            if tid in self.tag and (k in M.COMPOSITE or k == M.ENUM):
                self._define(tid, 0)
            elif tid in self.tag:                   # a struct only ever declared
                self._declare(tid, None)
            elif k == M.TYPEDEF and tid in self.tdname:
                self._typedef(tid, 0)
            elif k == M.ENUM and t.enumerators and tid not in used:
                self.chunks.append(self._enum_body(tid, "") + ";")     # constants only
        return self.chunks

    # ---- dependencies -------------------------------------------------------------------
    def _need(self, tid: int, strong: bool, owner: Optional[int], depth: int) -> None:
        """Make what a use of type `tid` needs come first: `strong` when the use needs it
        complete (held by value); `owner` is the definition the use is part of."""
        if depth > MAX_DEPTH:
            raise FormatError(f"type id {tid}: definitions nest more than {MAX_DEPTH} deep "
                              f"(a reference cycle?)")
        types = self.types
        for _ in range(M.MAX_CHAIN):
            t = types[tid]
            if t.kind == M.PTR:
                strong, tid = False, t.ref or 0
            elif t.kind in M.QUALIFIERS:
                tid = t.ref or 0
            elif t.kind == M.ARRAY:
                strong, tid = True, t.ref or 0     # an array's elements are complete
            else:
                break
        else:
            raise M.TypeCycle(f"type id {tid}: pointer/array/qualifier chain loops")
        k = t.kind
        depth += 1
        if k == M.TYPEDEF:
            if tid in self.tdname:
                self._typedef(tid, depth)
            if strong or tid not in self.tdname:
                self._need(t.ref or 0, strong, owner, depth)
        elif k in M.COMPOSITE or k == M.ENUM or k == M.FWD:
            tid = self.alias.get(tid, tid)
            if tid in self.tag:
                if strong or types[tid].kind == M.ENUM:
                    self._define(tid, depth)
                else:
                    self._declare(tid, owner)
            elif tid in self.named_by:              # written in its typedef
                self._typedef(self.named_by[tid], depth)
            else:                                   # written in place: its members
                for m in types[tid].members or ():
                    self._need(m.type, True, owner, depth)
        elif k == M.FUNC_PROTO:
            self._need(t.ref or 0, False, owner, depth)
            for p in t.params or ():
                self._need(p.type, False, owner, depth)

    def _declare(self, tid: int, owner: Optional[int]) -> None:
        """A struct/union tag is declared before text that names it (inside its own
        definition it is declared by the definition's opening)."""
        if tid in self.declared or tid == owner:
            return
        t = self.types[tid]
        kind = (t.encoding or M.STRUCT) if t.kind == M.FWD else t.kind
        self.chunks.append(f"{kind} {self.tag[tid]};")
        self.declared.add(tid)

    def _define(self, tid: int, depth: int) -> None:
        if tid in self.done:
            return
        t = self.types[tid]
        if tid in self.busy:
            raise M.TypeCycle(f"{t.kind} {t.name}: contains itself")
        if t.kind == M.ENUM:
            self.chunks.append(self._enum_body(tid, "") + ";")
        else:
            self.busy.add(tid)
            for m in t.members or ():
                self._need(m.type, True, tid, depth)
            self.chunks.append(self._composite_body(tid, "") + ";")
            self.busy.discard(tid)
        self.declared.add(tid)
        self.done.add(tid)

    def _typedef(self, tid: int, depth: int) -> None:
        if tid in self.done:
            return
        t = self.types[tid]
        if tid in self.busy:
            raise M.TypeCycle(f"typedef {t.name}: refers to itself")
        self.busy.add(tid)
        target = t.ref or 0
        tag = self.alias.get(target, target)
        if self.named_by.get(target) == tid:
            for m in self.types[target].members or ():     # its body is written here
                self._need(m.type, True, tid, depth)
        elif tag in self.tag and self.types[tag].kind != M.ENUM:
            self.declared.add(tag)      # `typedef struct foo foo_t;` declares struct foo
        else:
            self._need(target, False, tid, depth)
        self.chunks.append(f"typedef {self._decl(target, self.tdname[tid], '', tid)};")
        self.busy.discard(tid)
        self.done.add(tid)

    # ---- spelling -----------------------------------------------------------------------
    def _decl(self, tid: int, declarator: str, ind: str, own: Optional[int] = None,
              depth: int = 0) -> str:
        """A declaration of `declarator` with type `tid`; `ind` indents bodies written in
        place; `own`: the typedef being defined (its anonymous target is written out)."""
        if depth > M.MAX_DECL_DEPTH:
            raise M.TypeCycle(f"type id {tid}: declarator nests more than "
                              f"{M.MAX_DECL_DEPTH} deep (a reference cycle)")
        depth += 1
        types = self.types
        t = types[tid]
        k = t.kind
        if k == M.PTR:
            ref = t.ref or 0
            inner = "*" + declarator
            if self.g.strip_cv_kind(ref) in (M.ARRAY, M.FUNC_PROTO):
                inner = f"({inner})"
            return self._decl(ref, inner, ind, own, depth)
        if k == M.ARRAY:
            return self._decl(t.ref or 0, f"{declarator}[{t.nelems or 0}]", ind, own, depth)
        if k == M.FUNC_PROTO:
            params = [self._decl(p.type, "", ind, None, depth) for p in t.params or ()]
            if t.variadic:
                params.append("...")
            return self._decl(t.ref or 0, f"{declarator}({', '.join(params) or 'void'})", ind,
                              own, depth)
        if k in _SIMPLE_QUALIFIERS:
            ref = t.ref or 0
            if types[ref].kind == M.PTR:                # `char * const p`
                return self._decl(ref, f"{k} {declarator}".rstrip(), ind, own, depth)
            if self._element_has(ref, k):               # const (const char [4]): once
                return self._decl(ref, declarator, ind, own, depth)
            return f"{k} {self._decl(ref, declarator, ind, own, depth)}"
        if k == M.TYPE_TAG:
            return self._decl(t.ref or 0, declarator, ind, own, depth)
        if k == M.TYPEDEF and tid not in self.tdname:    # a nameless typedef: its target
            return self._decl(t.ref or 0, declarator, ind, own, depth)
        head = self._head(tid, ind, own)
        return f"{head} {declarator}" if declarator else head

    def _element_has(self, tid: int, qualifier: str) -> bool:
        """Whether an array's element type (the array `tid`, through its dimensions) is
        already `qualifier`-qualified: C has one place for both."""
        types = self.types
        if types[tid].kind != M.ARRAY:
            return False
        for _ in range(M.MAX_CHAIN):
            t = types[tid]
            if t.kind == M.ARRAY or (t.kind in M.QUALIFIERS and t.kind != qualifier):
                tid = t.ref or 0
            else:
                return t.kind == qualifier
        return False

    def _head(self, tid: int, ind: str, own: Optional[int]) -> str:
        t = self.types[tid]
        k = t.kind
        if k == M.VOID:
            return "void"
        if k == M.INT:
            return self._int(t, tid)
        if k == M.FLOAT:
            return {4: "float", 8: "double"}.get(t.size) or self._int_of_size(t.size, False,
                                                                               tid)
        if k == M.TYPEDEF:
            return self.tdname[tid]
        if k in M.COMPOSITE or k == M.ENUM or k == M.FWD:
            tid = self.alias.get(tid, tid)
            t = self.types[tid]
            if tid in self.tag:
                kind = (t.encoding or M.STRUCT) if t.kind == M.FWD else t.kind
                return f"{kind} {self.tag[tid]}"
            named_by = self.named_by.get(tid)
            if named_by is not None and named_by != own:
                return self.tdname[named_by]
            if t.kind in M.COMPOSITE:
                return self._composite_body(tid, ind)
            if t.kind == M.ENUM and t.enumerators:
                return self._enum_body(tid, ind)
            # a forward enum with no definition: the integer it is
            return self._int_of_size(t.size or 4, not t.signed, tid)
        raise FormatError(f"type id {tid}: a {k} cannot be written as a C type here")

    def _int(self, t: M.Type, tid: int) -> str:
        words = (t.name or "").split()
        if _lp64_size(words) == t.size:
            return " ".join(words)
        if t.encoding == "bool" and t.size == 1:
            return "_Bool"
        if t.encoding == "char" and t.size == 1:
            return "char"
        signed = t.signed if t.signed is not None else t.encoding == "signed"
        return self._int_of_size(t.size, not signed, tid)

    @staticmethod
    def _int_of_size(size: Optional[int], unsigned: bool, tid: int) -> str:
        pair = _BY_SIZE.get(size or 0)
        if pair is None:
            raise FormatError(f"type id {tid}: a {size}-byte number has no C type")
        return pair[1] if unsigned else pair[0]

    # ---- bodies -------------------------------------------------------------------------
    def _enum_body(self, tid: int, ind: str) -> str:
        t = self.types[tid]
        inner = ind + "\t"
        lines = [f"enum {self.tag[tid]} {{" if tid in self.tag else "enum {"]
        for name, value in t.enumerators or ():
            name = _unique(_ident(name, f"__anon_{tid}"), self.ordinary)
            lines.append(f"{inner}{name} = {_literal(value)},")
        text = "\n".join(lines) + f"\n{ind}}}"
        values = [v for _, v in t.enumerators or ()]
        size = t.size or 4
        if _c_enum_size(values) != size:
            if size not in _ENUM_MODE:
                raise FormatError(f"type id {tid}: a {size}-byte enum has no C type")
            text += f" __attribute__((mode({_ENUM_MODE[size]})))"
        return text

    def _composite_body(self, tid: int, ind: str) -> str:
        t = self.types[tid]
        plan = self._plan(tid)
        inner = ind + "\t"
        lines = [f"{t.kind} {self.tag[tid]} {{" if tid in self.tag else f"{t.kind} {{"]
        for i, item in enumerate(plan.items):
            if isinstance(item, M.Member):
                lines.append(f"{inner}{self._member(tid, i, item, inner)};")
            elif item[0] == "pad":
                lines.append(f"{inner}{item[1]}: {item[2]};")
            else:                                   # a union longer than its members
                pads = "".join(f"{inner}\t{ty}: {bits};\n" for ty, bits in _pads(0, item[1]))
                lines.append(f"{inner}struct {{\n{pads}{inner}}};")
        text = "\n".join(lines) + f"\n{ind}}}"
        return text + " __attribute__((packed))" if plan.packed else text

    def _member(self, owner: int, index: int, m: M.Member, ind: str) -> str:
        own = None
        if m.name is None and m.bit_size:
            name = ""                       # an unnamed bitfield
        elif m.name is None and self._anonymous(m.type) is not None:
            name = ""                       # an anonymous struct/union (`const` allowed)
            # written in place even when a typedef names its type
            own = self.named_by.get(self._anonymous(m.type))
        else:
            name = _ident(m.name, f"__unnamed_{index}")
        text = self._decl(m.type, name, ind, own)
        return f"{text}: {m.bit_size}" if m.bit_size else text

    def _anonymous(self, tid: int) -> Optional[int]:
        """The anonymous struct/union `tid` is, through qualifiers only (not typedefs)."""
        for _ in range(M.MAX_CHAIN):
            t = self.types[tid]
            if t.kind not in M.QUALIFIERS:
                return tid if t.kind in M.COMPOSITE and not t.name else None
            tid = t.ref or 0
        return None

    # ---- layout -------------------------------------------------------------------------
    def _size(self, tid: int, owner: int, m: M.Member) -> int:
        size = self.g.sizeof(tid)
        if size is None:
            o = self.types[owner]
            raise FormatError(f"{o.kind} {o.name or '(anonymous)'}: member "
                              f"{m.name or '(anonymous)'} has a type of unknown size "
                              f"(type id {tid})")
        return size

    def _align(self, tid: int) -> int:
        """The alignment, in bytes, the compiler gives the type as written here."""
        a = self.aligns.get(tid)
        if a is not None:
            return a
        t = self.types[self.g.strip(tid)]
        k = t.kind
        sid = self.g.strip(tid)
        if k == M.PTR:
            a = 8
        elif k == M.ARRAY:
            a = self._align(t.ref or 0)
        elif k in M.COMPOSITE:
            a = self._plan(sid).align
        elif k == M.FWD and sid in self.alias:
            a = self._align(self.alias[sid])
        elif k in (M.INT, M.FLOAT, M.ENUM):
            a = min(t.size or 4, 16)
        else:
            a = 1
        self.aligns[tid] = a
        return a

    def _plan(self, tid: int) -> _Plan:
        plan = self.plans.get(tid)
        if plan is not None:
            return plan
        t = self.types[tid]
        if tid in self.planning:
            raise M.TypeCycle(f"{t.kind} {t.name or '(anonymous)'}: contains itself")
        self.planning.add(tid)
        fields = [(m, self._size(m.type, tid, m), self._align(m.type)) for m in t.members or ()]
        lay = self._lay_union if t.kind == M.UNION else self._lay_struct
        plan = lay(t, fields, False) or lay(t, fields, True)
        self.planning.discard(tid)
        if plan is None:
            raise FormatError(f"{t.kind} {t.name or '(anonymous)'} (type id {tid}): its "
                              f"members cannot be laid out at the offsets given (they "
                              f"overlap or a member is not at a byte boundary)")
        self.plans[tid] = plan
        return plan

    @staticmethod
    def _lay_struct(t: M.Type, fields: list, packed: bool) -> Optional[_Plan]:
        """The struct's members where the compiler puts them (System V rules), padded to
        the offsets given; None if that cannot be done (packed or not, as asked)."""
        cur, align, items = 0, 1, []
        for m, size, natural in fields:
            a = 8 * (1 if packed else natural)
            at, want = cur, m.bit_offset
            if m.bit_size:
                w = m.bit_size
                if w > 8 * size:
                    return None
                if not packed and at % a + w > 8 * size:
                    at = _round_up(at, a)       # would straddle a unit of its type
                if want < at or (want > at and not packed and want % a + w > 8 * size):
                    return None
                if m.name:                      # unnamed bitfields add no alignment
                    align = max(align, a // 8)
                end = want + w
            else:
                if want % a:
                    return None
                at = _round_up(at, a)
                if want < at:
                    return None
                align = max(align, a // 8)
                end = want + 8 * size
            if want > at:
                items += [("pad", ty, bits) for ty, bits in _pads(cur, want)]
            items.append(m)
            cur = max(cur, end)
        total = 8 * (t.size or 0)
        natural_end = _round_up(cur, 8 * align)
        if natural_end > total or total % (8 * align):
            return None
        if natural_end < total:
            items += [("pad", ty, bits) for ty, bits in _pads(cur, total)]
        return _Plan(packed, align, items)

    @staticmethod
    def _lay_union(t: M.Type, fields: list, packed: bool) -> Optional[_Plan]:
        cur, align, items = 0, 1, []
        for m, size, natural in fields:
            if m.bit_offset != 0:
                return None
            if m.name or not m.bit_size:
                align = max(align, 1 if packed else natural)
            cur = max(cur, m.bit_size or 8 * size)
            items.append(m)
        total = 8 * (t.size or 0)
        natural_end = _round_up(cur, 8 * align)
        if natural_end > total or total % (8 * align):
            return None
        if natural_end < total:
            items.append(("union-pad", total))
        return _Plan(packed, align, items)


def _c_enum_size(values: list) -> int:
    """sizeof an enum with these values as C (clang, GCC) makes it without attributes."""
    lo, hi = min(values, default=0), max(values, default=0)
    if lo >= -(1 << 31) and hi < (1 << 31) or lo >= 0 and hi < (1 << 32):
        return 4
    return 8


def _literal(v: int) -> str:
    if v >= 1 << 63:
        return f"{v}ULL"
    if v == -(1 << 63):
        return "(-9223372036854775807LL - 1)"
    return str(v)
