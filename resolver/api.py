"""The resolver's Python API (drgn-like):

    from resolver import Resolver
    r = Resolver.for_running_kernel()               # or Resolver.open(db=...) / (hive=, release=, arch=)
    r.offset("task_struct.files")                   # Offset(offset=..., size=8, type='struct files_struct *', ...)
    r.offset("sock.__sk_common.skc_family").offset
    r.offset("task_struct->files->fdt").hops        # one Offset per pointer hop
    r.struct("task_struct").members                 # top-level members
    r.func("do_filp_open")                          # prototype(s)

Lookups go through the overlay DBs first (a kobuild `prev.db` of custom modules), then the
kernel's DB.  Errors are `LookupError` subclasses from `resolver.errors`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterator, NamedTuple, Optional

from dbhive.surftrace import TypeAccess, flat_members, signature

from . import choose, paths
from .errors import AbsentMember, NoSuchFunction, NoSuchType, NotAPointer
from .kernel import ARRAY, COMPOSITE, ENUM, FWD, PTR, KernelDB, TypeSource

_RESULT_CACHE_MAX = 65536
_SURFTRACE_CACHE_MAX = 4096
_MISS = object()


class Offset(NamedTuple):
    """Where a member path lands.  For a bitfield, `offset`/`size` are its storage unit
    (aligned to the declared type's size, as pahole prints it) and `bit_offset` is the bit
    within that unit (little-endian numbering); `bit_size` is its width.  For `->` paths,
    the fields describe the last hop and `hops` lists every hop (each from its own base).
    (A NamedTuple: immutable and cheap to make on the hot path.)"""
    path: str
    offset: int
    size: int
    type: str
    bit_offset: Optional[int] = None
    bit_size: Optional[int] = None
    hops: tuple = ()
    note: Optional[str] = None

    @property
    def is_bitfield(self) -> bool:
        return self.bit_size is not None

    @property
    def bit_position(self) -> int:
        """Absolute bit position from the start of the (last hop's) object."""
        return self.offset * 8 + (self.bit_offset or 0)

    def as_dict(self) -> dict:
        d = {"offset": self.offset, "size": self.size, "type": self.type,
             "bit_offset": self.bit_offset, "bit_size": self.bit_size}
        if self.hops:
            d["hops"] = [h.as_dict() for h in self.hops]
        if self.note:
            d["note"] = self.note
        return d


@dataclass(frozen=True)
class MemberInfo:
    name: Optional[str]
    type: str
    offset: int
    size: int
    bit_offset: Optional[int] = None
    bit_size: Optional[int] = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StructInfo:
    name: str            # 'struct task_struct'
    kind: str
    size: int
    members: tuple
    layouts: int = 1     # >1: the name has several layouts in this kernel; this is the first
    db: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "size": self.size,
                "layouts": self.layouts, "members": [m.as_dict() for m in self.members]}


@dataclass(frozen=True)
class Param:
    name: Optional[str]
    type: str


@dataclass(frozen=True)
class FuncInfo:
    name: str
    ret: str
    params: tuple
    variadic: bool = False
    static: bool = False
    file: Optional[str] = None
    line: Optional[int] = None
    module: Optional[str] = None

    def as_dict(self) -> dict:
        return {"name": self.name, "ret": self.ret,
                "params": [{"name": p.name, "type": p.type} for p in self.params],
                "variadic": self.variadic, "static": self.static, "file": self.file,
                "line": self.line, "module": self.module}

    def prototype(self) -> str:
        ps = [f"{p.type} {p.name}".replace("* ", "*") if p.name else p.type for p in self.params]
        if self.variadic:
            ps.append("...")
        ret = self.ret
        sep = "" if ret.endswith("*") else " "
        return f"{'static ' if self.static else ''}{ret}{sep}{self.name}({', '.join(ps) or 'void'})"


@dataclass(frozen=True)
class TypeRef:
    """A type found by name: which DB it lives in and its id there."""
    db: TypeSource
    id: int


def bitfield_unit(bit_pos: int, bit_size: int, unit: int) -> tuple:
    """(byte offset, bit offset within the unit) of a bitfield, pahole style: the storage unit
    is the declared type's size, aligned to it."""
    unit_bits = (unit or 1) * 8
    start = (bit_pos // unit_bits) * unit_bits
    return start // 8, bit_pos - start


class Resolver:
    """Answers layout questions about one kernel (plus optional overlay DBs)."""

    def __init__(self, db: TypeSource, overlays: tuple = (), warnings: tuple = ()):
        self.db = db
        self.overlays = tuple(o for o in overlays if o.has_kt)
        self.sources = self.overlays + (db,)
        self.warnings = list(warnings)
        self._results: dict = {}
        self._types: dict = {}
        self._notes: dict = {}
        self._surftrace: dict = {}

    # ---- construction ----------------------------------------------------
    @classmethod
    def open(cls, db: Optional[str] = None, hive: Optional[str] = None,
             release: Optional[str] = None, arch: Optional[str] = None,
             build_id: Optional[str] = None, overlay: Optional[str] = "auto") -> "Resolver":
        """Open an explicit DB file, or the hive's DB for (release, arch[, build_id]), or —
        with neither — the DB of the running kernel.  `overlay`: a prev.db path, None for
        none, or "auto" ($LBC_PREVDB, else ./prev.db when it exists)."""
        choice = choose.choose_db(db=db, hive=hive, release=release, arch=arch,
                                  build_id=build_id)
        return cls(KernelDB(choice.path), (), choice.warnings)._overlaid(overlay)

    @classmethod
    def for_running_kernel(cls, hive: Optional[str] = None, overlay: Optional[str] = "auto"):
        return cls.open(hive=hive, overlay=overlay)

    @classmethod
    def from_btf(cls, path: str = "/sys/kernel/btf/vmlinux", overlay: Optional[str] = None,
                 meta: Optional[dict] = None) -> "Resolver":
        """Answer from a kernel's BTF read straight into memory, no DB: raw BTF
        (/sys/kernel/btf/vmlinux, *.btf) or an ELF file with a .BTF section.  Answers equal
        those of a DB built from the same BTF.  `meta`: the kernel identity to report
        (default: the running kernel's for /sys/kernel/btf/vmlinux, else the path only)."""
        from .btfsource import btf_source
        return cls(btf_source(path, meta))._overlaid(overlay)

    def set_overlays(self, overlay: Optional[str] = "auto") -> "Resolver":
        """Consult these overlay DBs (kobuild's prev.db of modules) before the kernel's, in
        place of any before: a path, None for none, or "auto" ($LBC_PREVDB, else ./prev.db
        when it exists).  NoKernelDB when an overlay is for another kernel (release or arch)
        than this resolver's; a warning in `self.warnings` when one side does not say.
        Returns self."""
        opened, notes = [], []
        try:
            for p in choose.overlay_paths(overlay):
                o = KernelDB(p)
                opened.append(o)
                note = choose.check_overlay(o.path, o.meta, self.db.meta,
                                            f"the kernel's {self.source}")
                if note:
                    notes.append(note)
        except BaseException:
            for o in opened:
                o.close()
            raise
        for o in self.overlays:
            o.close()
        self.overlays = tuple(o for o in opened if o.has_kt)
        self.sources = self.overlays + (self.db,)
        self.warnings.extend(notes)
        for cache in (self._results, self._types, self._notes, self._surftrace):
            cache.clear()
        return self

    def _overlaid(self, overlay: Optional[str]) -> "Resolver":
        """set_overlays for a resolver just opened: closed again when that fails."""
        try:
            return self.set_overlays(overlay)
        except BaseException:
            self.close()
            raise

    @property
    def overlay_files(self) -> list:
        """The overlay DBs consulted before the kernel's (absolute paths), in order."""
        return [o.path for o in self.overlays]

    def close(self) -> None:
        for s in self.sources:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def kernel(self) -> dict:
        m = self.db.meta
        return {"release": m.get("release"), "arch": m.get("arch"),
                "build_id": m.get("build_id"), "db": self.db.path}

    @property
    def source(self) -> str:
        """Where the answers come from: 'db:<path>' or 'btf:<path>'."""
        return self.db.source

    # ---- type lookup -----------------------------------------------------
    def find_type(self, name: str, kind: Optional[str] = None) -> TypeRef:
        """A struct/union (or a typedef of one) by name, overlays first."""
        hit = self._types.get((name, kind))
        if hit is not None:
            return hit
        ref = self._find_type(name, kind)
        if len(self._types) < _RESULT_CACHE_MAX:
            self._types[(name, kind)] = ref
        return ref

    def _find_type(self, name: str, kind: Optional[str]) -> TypeRef:
        name = name.strip()
        if kind is None:
            for k in ("struct", "union"):
                if name.startswith(k + " "):
                    kind, name = k, name[len(k) + 1:].strip()
        for src in self.sources:
            tid = src.find_composite(name, kind)
            if tid is not None:
                return TypeRef(src, tid)
        spelled = f"{kind} {name}" if kind else name
        raise NoSuchType(f"{spelled}: no such struct, union or typedef in this kernel "
                         f"({self._kernel_label()})")

    def _kernel_label(self) -> str:
        m = self.db.meta
        return f"{m.get('release', '?')} {m.get('arch', '')}".strip()

    def _layout_note(self, ref: TypeRef) -> Optional[str]:
        key = (id(ref.db), ref.id)
        if key in self._notes:
            return self._notes[key]
        note = self._notes[key] = self._layout_note_uncached(ref)
        return note

    def _layout_note_uncached(self, ref: TypeRef) -> Optional[str]:
        t = ref.db.type(ref.id)
        if t.name and t.kind in COMPOSITE:
            n = ref.db.layouts(t.name, t.kind)
            if n > 1:
                return (f"{t.kind} {t.name} has {n} different layouts in this kernel; "
                        f"using the first (type id {ref.id})")
            if ref.db is not self.db:
                # an overlay's struct: say so when the kernel has another of that name
                mine = {(size, sig) for tid, size, sig in
                        ref.db.layout_signatures(t.name, t.kind) if tid == ref.id}
                kernel = self.db.layout_signatures(t.name, t.kind)
                if kernel and not any((size, sig) in mine for _, size, sig in kernel):
                    return (f"{t.kind} {t.name} of the modules' overlay "
                            f"({ref.db.source}); the kernel has another layout of that "
                            f"name (type id {kernel[0][0]}, {kernel[0][1]} bytes)")
        return None

    # ---- offsets -----------------------------------------------------------
    def offset(self, path: str) -> Offset:
        """Offset of a member path.  Raises BadPath, NoSuchType, AbsentMember, NotAPointer."""
        hit = self._results.get(path)
        if hit is not None:
            return hit
        res = self._offset(paths.parse_path(path))[0]
        if len(self._results) < _RESULT_CACHE_MAX:
            self._results[path] = res
        return res

    def offsets(self, path_list) -> dict:
        """{path: Offset or the ResolverError raised for it}."""
        out = {}
        for p in path_list:
            try:
                out[p] = self.offset(p)
            except LookupError as e:
                out[p] = e
        return out

    def answered_by(self, path: str) -> str:
        """Where offset(path)'s answer (its last hop's layout) came from: 'overlay:<file>'
        for an overlay DB, else `self.source`.  Raises as offset() does."""
        db = self._offset(paths.parse_path(path))[1]
        return self.source if db is self.db else f"overlay:{db.path}"

    def _offset(self, mp: paths.MemberPath) -> tuple:
        """(Offset, the source whose layout gave the last hop)."""
        ref = self.find_type(mp.root, mp.root_kind)
        note = self._layout_note(ref)
        # the text walked so far, kept as parts: joined only for messages and hop paths
        parts = [mp.root if mp.root_kind is None else f"{mp.root_kind} {mp.root}"]
        hop_results = []
        steps = mp.steps
        db, cur = ref.db, ref.id
        bits, mtype, bsize = 0, None, 0
        for si, step in enumerate(steps):
            if si and step.sep == "->":
                hop_results.append(self._make_offset(db, "".join(parts), bits, mtype, bsize))
                ref = self._deref(TypeRef(db, cur), mtype, "".join(parts))
                db, cur = ref.db, ref.id
                bits, mtype, bsize = 0, None, 0
            elif mtype is not None:
                if bsize:
                    raise NotAPointer(f"{''.join(parts)} is a bitfield: it has no members")
                cur = db.complete(db.strip(mtype))
                kind = db.type(cur).kind
                if kind not in COMPOSITE:
                    if kind == PTR:
                        raise NotAPointer(f"{''.join(parts)} is a pointer "
                                          f"({db.spelling(mtype)}): use '->' to reach {step.name}")
                    raise NotAPointer(f"{''.join(parts)} is a {db.spelling(mtype)}, not a "
                                      f"struct or union: it has no member {step.name}")
            found = db.find_member(cur, step.name)
            if found is None:
                t = db.type(cur)
                what = f"{t.kind} {t.name}" if t.name else "".join(parts)
                raise AbsentMember(f"{''.join(parts)}{step.sep}{step.name}: absent in this "
                                   f"kernel ({what} has no member {step.name!r}; "
                                   f"{self._kernel_label()})")
            bits += found.bit_offset
            mtype, bsize = found.type, found.bit_size
            parts.append(step.sep)
            parts.append(step.name)
            for idx in step.indexes:
                at = db.type(db.strip(mtype))
                if at.kind != ARRAY:
                    raise NotAPointer(f"{''.join(parts)} is not an array "
                                      f"({db.spelling(mtype)}): cannot take [{idx}]")
                if at.nelems and idx >= at.nelems:
                    raise AbsentMember(f"{''.join(parts)}[{idx}]: index out of range "
                                       f"(the array has {at.nelems} elements)")
                bits += idx * (db.sizeof(at.ref) or 0) * 8
                mtype = at.ref
                parts.append(f"[{idx}]")
        if hop_results:
            last = self._make_offset(db, mp.text, bits, mtype, bsize)
            hop_results.append(last)
            return last._replace(hops=tuple(hop_results), note=note), db
        last = self._make_offset(db, mp.text, bits, mtype, bsize)
        return (last._replace(note=note) if note else last), db

    def _make_offset(self, db: TypeSource, path: str, bits: int, mtype: int, bsize: int) -> Offset:
        spelled = db.spelling(mtype)
        if bsize:
            unit = db.sizeof(mtype) or 4
            off, bit = bitfield_unit(bits, bsize, unit)
            return Offset(path, off, unit, spelled, bit, bsize)
        return Offset(path, bits // 8, db.sizeof(mtype) or 0, spelled)

    def _deref(self, ref: TypeRef, mtype: int, walked: str) -> tuple:
        """The struct/union a pointer member points to (for a `->` hop)."""
        db = ref.db
        pt = db.type(db.strip(mtype))
        if pt.kind != PTR or pt.ref is None:
            raise NotAPointer(f"{walked} is not a pointer ({db.spelling(mtype)}): use '.'")
        target = db.complete(db.strip(pt.ref))
        tt = db.type(target)
        if tt.kind == FWD or (tt.kind in COMPOSITE and tt.size is None):
            # declared only: find the full layout by name (overlays, then the kernel)
            kind = tt.kind if tt.kind in COMPOSITE else (tt.encoding or "struct")
            return self.find_type(tt.name, kind)
        if tt.kind not in COMPOSITE:
            raise NotAPointer(f"{walked} points to {db.spelling(pt.ref)}, not to a struct or "
                              f"union")
        return TypeRef(db, target)

    # ---- struct layouts --------------------------------------------------------
    def struct(self, name: str) -> StructInfo:
        ref = self.find_type(name)
        return self._struct_info(ref, name.strip())

    def _struct_info(self, ref: TypeRef, asked: Optional[str] = None) -> StructInfo:
        db, tid = ref.db, ref.id
        t = db.type(tid)
        members = []
        for m in db.members(tid):
            mt = m.type
            if m.bit_size:
                unit = db.sizeof(mt) or 4
                off, bit = bitfield_unit(m.bit_offset, m.bit_size, unit)
                members.append(MemberInfo(m.name or None, db.spelling(mt), off, unit, bit,
                                          m.bit_size))
            else:
                members.append(MemberInfo(m.name or None, db.spelling(mt), m.bit_offset // 8,
                                          db.sizeof(mt) or 0))
        layouts = db.layouts(t.name, t.kind) if t.name else 1
        return StructInfo(f"{t.kind} {t.name}" if t.name else (asked or t.spelling), t.kind, t.size or 0,
                          tuple(members), layouts, db.path)

    def dump(self) -> Iterator[StructInfo]:
        """Every named struct/union (first layout per name), sorted by name."""
        self.db.preload()
        seen = set()
        for (tid, kind, name, _size) in self.db.all_composites():
            if (kind, name) in seen:
                continue
            seen.add((kind, name))
            yield self._struct_info(TypeRef(self.db, tid))

    # ---- functions -------------------------------------------------------------
    def func(self, name: str) -> list:
        """Every function of that name (several static ones may share it), overlays first."""
        out = []
        for src in self.sources:
            for (fname, proto, static, file, line, module) in src.functions(name):
                pt = src.type(proto)
                params = tuple(Param(pn or None, src.spelling(ptype))
                               for (pn, ptype) in src.params(proto))
                ret = src.spelling(pt.ref) if pt.ref is not None else "void"
                out.append(FuncInfo(fname, ret, params, bool(pt.kind == "func_proto" and
                                                             src.variadic(proto)),
                                    bool(static), file, line, module))
            if out:
                return out
        raise NoSuchFunction(f"{name}: no such function in this kernel ({self._kernel_label()})")

    # ---- the surftrace view (the lbc protocol's struct/type/func answers) ----------
    # What the surftrace client's tables hold, computed by the same code that fills those
    # tables (dbhive.surftrace), so remote answers equal local ones.  Overlays first.

    def surftrace_struct(self, name: str) -> Optional[dict]:
        """{"name", "members", "size", "cell": [{"type", "offset", "size", "bits", "name"}]}
        for a surftrace struct name (`struct X`, `union X`, an anonymous struct's typedef
        name), or None.  (Cached: a server asks for the same structs again and again.)"""
        hit = self._surftrace.get(name, _MISS)
        if hit is _MISS:
            hit = self._surftrace_struct(name)
            if len(self._surftrace) < _SURFTRACE_CACHE_MAX:
                self._surftrace[name] = hit
        return hit

    def _surftrace_struct(self, name: str) -> Optional[dict]:
        for src in self.sources:
            tid = src.surftrace_struct(name)
            if tid is not None:
                cells = [{"type": t, "offset": o, "size": b, "bits": bits, "name": n}
                         for (n, t, o, b, bits) in flat_members(_access(src), tid)]
                return {"name": name, "members": len(cells), "size": src.type(tid).size,
                        "cell": cells}
        return None

    def surftrace_structs_like(self, pattern: str, limit: int = 10) -> list:
        """[{"name", "members", "size"}] of struct names matching a LIKE pattern (`%`)."""
        out, seen = [], set()
        for src in self.sources:
            for name, tid in src.surftrace_structs_like(pattern, limit):
                if name not in seen and len(out) < limit:
                    seen.add(name)
                    n = sum(1 for _ in flat_members(_access(src), tid))
                    out.append({"name": name, "members": n, "size": src.type(tid).size})
        return out

    def surftrace_type(self, name: str) -> Optional[dict]:
        """{"name", "type" (what it resolves to), "size"} of a type spelling, or None."""
        for src in self.sources:
            tid = src.type_by_spelling(name)
            if tid is not None:
                return {"name": name, "type": src.spelling(src.strip(tid)),
                        "size": src.sizeof(tid) or 0}
        if name == "void *":
            return {"name": name, "type": name, "size": self.db.ptr_size}
        return None

    def surftrace_funcs(self, pattern: str, ret: Optional[str] = None,
                        arg: Optional[str] = None, limit: int = 20) -> list:
        """[{"func", "args", "ret", "line", "file"}] of the functions named `pattern`
        (exact, or a LIKE pattern with `%`), optionally only those returning `ret` or
        taking an `arg`; in the kernel's order, at most `limit`."""
        for src in self.sources:
            rows = src.functions_like(pattern) if "%" in pattern else src.functions(pattern)
            out = []
            for (fname, proto, static, file, line, _module) in rows:
                args, fret = _surftrace_signature(src, proto, bool(static))
                if ret is not None and fret not in (ret, "static " + ret):
                    continue
                if arg is not None and arg not in args:
                    continue
                out.append({"func": fname, "args": args, "ret": fret, "line": line,
                            "file": file or ""})
                if len(out) >= limit:
                    break
            if out:
                return out
        return []

    # ---- plain type facts (used by expr) -----------------------------------------
    def sizeof_name(self, name: str) -> Optional[int]:
        """sizeof a named type (`struct iphdr`, `u32`, `int`), or None."""
        ref = None
        try:
            ref = self.find_type(name)
        except NoSuchType:
            pass
        if ref is not None:
            return ref.db.sizeof(ref.id)
        kinds, base = ("typedef", "int", "float", "enum"), name.strip()
        if base.startswith("enum "):
            kinds, base = ("enum",), base[5:].strip()
        for src in self.sources:
            for kind in kinds:
                for (tid, _k, _s, _r) in src.named(base, kind):
                    return src.sizeof(tid)
        return None


def _access(src: TypeSource) -> TypeAccess:
    return TypeAccess(src.type, src.members, src.sizeof, src.spelling)


def _surftrace_signature(src: TypeSource, proto: int, static: bool) -> tuple:
    """(args, ret) as the surftrace `funs` table spells them."""
    ref = src.type(proto).ref
    return signature([src.spelling(t) for (_n, t) in src.params(proto)], src.variadic(proto),
                     src.spelling(ref if ref is not None else 0), static)


__all__ = ["Resolver", "Offset", "StructInfo", "MemberInfo", "FuncInfo", "Param",
           "bitfield_unit", "ENUM"]
