"""Go struct members for uprobe member chains (`%0->conn.data`), from every source the Go
report knows, each answer saying where it came from:

  dwarf      the binary's DWARF (read by the project's DWARF reader into the shared model)
  typeinfo   its runtime type descriptors (resolver.golang.typeinfo): stripped binaries too
  table      the generated offsets table (resolver.golang.offsets), for the fields it lists

The first source that knows a member gives its offset and type; the others that know it
are checked against it (`checked`), and a disagreement is kept (`conflicts`) and reported,
never resolved silently.  The table knows offsets only: a member only it knows can end a
chain when its type is given by a cast, not be walked through.

Types are spelled as Go spells them (`*crypto/tls.Conn`, `internal/poll.FD`, `[]uint8`,
`net.Conn`).  Go's built-in composite values have the members their DWARF gives them:
string {str, len}, slice {array, len, cap}, interface {tab, data} (`interface {}`:
{_type, data}).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from dbhive.errors import BadPath, ExprError

SCALARS = {"int": (8, True), "int8": (1, True), "int16": (2, True), "int32": (4, True),
           "int64": (8, True), "uint": (8, False), "uint8": (1, False), "byte": (1, False),
           "uint16": (2, False), "uint32": (4, False), "uint64": (8, False),
           "uintptr": (8, False), "rune": (4, True), "bool": (1, False),
           "unsafe.Pointer": (8, False), "float32": (4, None), "float64": (8, None)}


@dataclass(frozen=True)
class GoType:
    """kind: ptr, struct, iface, eface, string, slice, scalar, other."""
    kind: str
    name: str                # the Go spelling
    size: Optional[int]
    elem: Optional[str] = None    # ptr: the pointee's spelling
    signed: Optional[bool] = None


@dataclass
class GoMember:
    offset: int
    type: Optional[GoType]
    source: str
    checked: List[str] = field(default_factory=list)
    conflicts: Dict[str, int] = field(default_factory=dict)

    def describe(self, key: str) -> str:
        s = f"{key} +{self.offset} [{self.source}"
        if self.checked:
            s += "; checked: " + ", ".join(self.checked)
        if self.conflicts:
            s += "; CONFLICT: " + ", ".join(f"{k} says {v}" for k, v in self.conflicts.items())
        return s + "]"


_BUILTIN_MEMBERS = {
    "string": {"str": (0, "*uint8"), "len": (8, "int")},
    "slice": {"array": (0, "unsafe.Pointer"), "len": (8, "int"), "cap": (16, "int")},
    "iface": {"tab": (0, "unsafe.Pointer"), "data": (8, "unsafe.Pointer")},
    "eface": {"_type": (0, "unsafe.Pointer"), "data": (8, "unsafe.Pointer")},
}


def parse_type(text: str) -> GoType:
    """A Go type as written in a cast: `*crypto/tls.Conn`, `int32`, `[]uint8`, `string`."""
    t = text.strip()
    if t.startswith("*"):
        inner = t[1:].strip()
        if not inner:
            raise ExprError(f"bad Go type {text!r}")
        return GoType("ptr", "*" + inner, 8, elem=inner)
    if t in SCALARS:
        size, signed = SCALARS[t]
        return GoType("scalar", t, size, signed=signed)
    if t == "string":
        return GoType("string", t, 16)
    if t.startswith("[]"):
        return GoType("slice", t, 24)
    if t in ("interface {}", "any"):
        return GoType("eface", t, 16)
    if not t or any(c in t for c in " ()\t"):
        raise ExprError(f"bad Go type {text!r} (e.g. *crypto/tls.Conn, int32, string)")
    return GoType("struct", t, None)          # a named type: what it is, the sources say


class GoTypes:
    """Member lookups over a Go binary's sources (dwarf, typeinfo, table)."""

    def __init__(self, binary, version: Optional[str], deps: Dict[str, str]):
        self.b = binary
        self.version = version
        self.deps = deps
        self._dwarf = None
        self._dwarf_tried = False
        self._types = None
        self._types_why: Optional[str] = None
        self._types_tried = False

    # ---- sources -------------------------------------------------------------------------
    def dwarf(self):
        if not self._dwarf_tried:
            self._dwarf_tried = True
            if self.b.dwarf_path() is not None:
                self._dwarf = self.b.types()
        return self._dwarf

    def descriptors(self):
        if not self._types_tried:
            self._types_tried = True
            from ..golang.report import open_types
            from dbhive.errors import GoFormatError
            try:
                self._types, _v = open_types(self.b.path)
            except GoFormatError as e:
                self._types, self._types_why = None, str(e)
        return self._types

    # ---- resolving a named type ------------------------------------------------------------
    def resolve(self, t: GoType) -> GoType:
        """A named type's kind and size (struct, interface, or a named scalar)."""
        if t.kind != "struct" or t.size is not None:
            return t
        src = self.dwarf()
        if src is not None:
            for kind in ("struct", "typedef"):
                for (tid, _k, _s, _r) in src.named(t.name, kind):
                    got = self._from_dwarf(src, tid, t.name)
                    if got.kind != "other":
                        return got
        d = self.descriptors()
        if d is not None:
            got = self._from_descriptor_name(d, t.name)
            if got is not None:
                return got
        return t

    def _from_dwarf(self, src, tid: int, name: Optional[str] = None) -> GoType:
        t = src.type(tid)
        if t.kind == "typedef":
            name = name or t.name
            t = src.type(src.strip(tid))
        name = name or t.name or t.spelling
        if t.kind == "ptr":
            target = src.type(src.strip(t.ref)) if t.ref is not None else None
            tname = (target.name or target.spelling) if target is not None else "void"
            # a typedef'd pointee keeps its Go name (net.Conn, not runtime.iface)
            if t.ref is not None and src.type(t.ref).kind == "typedef":
                tname = src.type(t.ref).name
            return GoType("ptr", "*" + tname, 8, elem=tname)
        if t.kind in ("struct", "union"):
            if t.name == "runtime.iface":
                return GoType("iface", name, t.size)
            if t.name == "runtime.eface":
                return GoType("eface", name, t.size)
            if t.name == "string":
                return GoType("string", name, t.size)
            if (t.name or "").startswith("[]"):
                return GoType("slice", name, t.size)
            return GoType("struct", t.name or name, t.size)
        if t.kind in ("int", "enum"):
            return GoType("scalar", name, t.size, signed=bool(t.signed))
        if t.kind == "float":
            return GoType("scalar", name, t.size)
        return GoType("other", name, src.sizeof(tid))

    def _from_descriptor_name(self, d, full: str) -> Optional[GoType]:
        """The kind/size of named type `full` from the descriptors (via its `*T`)."""
        from ..golang.typeinfo import _Bad, package_names, split_type_name
        try:
            pkg, tname = split_type_name(full)
        except BadPath:
            return None
        for pname in package_names(pkg):
            for ptr in d.by_string(f"*{pname}.{tname}"):
                try:
                    t = d.elem(ptr)
                    if d.full_name(t) != full:
                        continue
                    kind, size = d.kind(t), d.size(t)
                except _Bad:
                    continue
                return _by_kind(kind, full, size)
        return None

    def _descriptor_field_type(self, d, text: str, size: int) -> GoType:
        """A field's type from its reflect string ("*net.netFD", "poll.FD", "int")."""
        from ..golang.typeinfo import K_PTR, _Bad
        if text.startswith("*"):
            inner = self._full_name_of(d, text)
            return GoType("ptr", "*" + (inner or text[1:]), 8, elem=inner or text[1:])
        base = parse_type(text) if not text.startswith(("map[", "chan ", "func(", "[")) or \
            text.startswith("[]") else GoType("other", text, size)
        if base.kind != "struct":
            if base.kind == "scalar":
                return GoType("scalar", text, size, signed=base.signed)
            return GoType(base.kind, text, size)
        if text.startswith("interface {"):
            return GoType("iface", text, size)
        for ptr in d.by_string("*" + text):
            try:
                if d.kind(ptr) != K_PTR:
                    continue
                t = d.elem(ptr)
                kind, full = d.kind(t), d.full_name(t) or text
            except _Bad:
                continue
            return _by_kind(kind, full, size)
        return GoType("other", text, size)

    def _full_name_of(self, d, ptr_text: str) -> Optional[str]:
        """The pointee's full name of a pointer type string (`*net.netFD` -> net.netFD)."""
        from ..golang.typeinfo import K_PTR, _Bad
        names = set()
        for ptr in d.by_string(ptr_text):
            try:
                if d.kind(ptr) == K_PTR:
                    full = d.full_name(d.elem(ptr))
                    if full:
                        names.add(full)
            except _Bad:
                continue
        return names.pop() if len(names) == 1 else None

    # ---- members ---------------------------------------------------------------------------
    def member(self, owner: GoType, name: str) -> Tuple[GoMember, str]:
        """(member, its key `owner.field`) of a struct/string/slice/interface value."""
        owner = self.resolve(owner)
        key = f"{owner.name}.{name}"
        if owner.kind in _BUILTIN_MEMBERS:
            m = _BUILTIN_MEMBERS[owner.kind].get(name)
            if m is None:
                raise ExprError(f"{owner.name} (a Go {owner.kind}) has no member {name}: it has "
                                f"{', '.join(_BUILTIN_MEMBERS[owner.kind])}")
            return GoMember(m[0], parse_type(m[1]), "go-abi"), key
        if owner.kind != "struct":
            raise ExprError(f"{owner.name} is not a struct: it has no member {name}")
        answers: List[Tuple[str, int, Optional[GoType]]] = []
        reasons = []
        src = self.dwarf()
        if src is not None:
            tid = src.find_composite(owner.name, "struct")
            if tid is not None:
                found = src.find_member(tid, name)
                if found is not None:
                    answers.append(("dwarf", found.bit_offset // 8,
                                    self._from_dwarf(src, found.type)))
            else:
                reasons.append(f"no DWARF struct {owner.name}")
        d = self.descriptors()
        if d is not None:
            lay, why = d.find_struct(owner.name)
            if lay is not None:
                for f in lay.fields:
                    if f.name == name:
                        answers.append(("typeinfo", f.offset,
                                        self._descriptor_field_type(d, f.type, f.size)))
                        break
                else:
                    reasons.append(f"its type descriptor has no field {name}")
            else:
                reasons.append(why)
        else:
            reasons.append(f"type descriptors unavailable ({self._types_why})")
        if "." in owner.name and "/" not in owner.name.rsplit(".", 1)[1]:
            from ..golang.offsets import resolve_offsets
            tab = resolve_offsets([key], None, self.version, self.deps)[key]
            if tab["offset"] is not None:
                answers.append((tab["source"], tab["offset"], None))
        if not answers:
            raise ExprError(f"{key}: no source knows this member ({'; '.join(reasons)})")
        source, offset, typ = answers[0]
        m = GoMember(offset, typ, source)
        for s, off, t in answers[1:]:
            if off == offset:
                m.checked.append(s)
            else:
                m.conflicts[s] = off
            if m.type is None and t is not None:
                m.type = t
        return m, key


def _by_kind(kind: int, full: str, size: int) -> GoType:
    """A named type's GoType from its descriptor kind."""
    from ..golang.typeinfo import K_INTERFACE, K_STRUCT
    if kind == K_STRUCT:
        return GoType("struct", full, size)
    if kind == K_INTERFACE:
        return GoType("iface", full, size)
    return GoType("scalar" if size in (1, 2, 4, 8) else "other", full, size)
