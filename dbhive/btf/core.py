"""CO-RE relocation, the way libbpf does it, over our type model: which target (kernel)
types a BPF object's relocation matches and what value it gets.

The rules are libbpf's (relo_core.c, documented in its comments; our code is our own):
  * candidates are the target types of the local root's kind (enum and enum64 alike) whose
    *essential* name -- the name before a trailing `___flavor` -- equals the local one's;
  * a field relocation follows the local access string ("0:3:1": array index of the root,
    then member / element indexes) and looks each named member up in the candidate by name,
    descending into anonymous structs/unions; member types must be compatible (any two
    structs/unions, any two pointers, enums/fwds by name, ints if not bitfield-style,
    arrays by element);
  * type relocations need compatible types (kinds through typedefs and qualifiers, pointers
    and arrays followed, function prototypes by arity); TYPE_MATCHES is stricter (members by
    name and type, enum values by name, int size and sign);
  * enum-value relocations need an enumerator of the same essential name;
  * every matching candidate must give the same value (else libbpf refuses: ambiguity); the
    first one is the target (bpftool's min_core_btf keeps only that one).

A target is any `TypeView`: a TypeGraph in memory (`GraphView`) or a kernel DB read on
demand (dbview.DbView), so one relocation costs a few indexed lookups, not a whole kernel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .. import model as M
from ..errors import BtfError
from . import ext as E

MAX_SPEC = E.MAX_ACCESS_LEN
MAX_DEPTH = 32                     # libbpf's recursion limits for compat / match
_MODS = (M.TYPEDEF, M.CONST, M.VOLATILE, M.RESTRICT, M.TYPE_TAG)


class CoreError(BtfError):
    """A relocation libbpf itself would refuse (malformed, ambiguous, unsatisfiable)."""


def essential(name: Optional[str]) -> str:
    """`task_struct___v2` -> `task_struct` (the part before the last `X___Y` separator)."""
    if not name:
        return ""
    n = len(name)
    for i in range(n - 5, -1, -1):
        if name[i] != "_" and name[i + 1:i + 4] == "___" and name[i + 4] != "_":
            return name[:i + 1]
    return name


def kind_of(t: M.Type) -> str:
    """The BTF kind a model type is written as, enum64 folded into enum (a FWD of an enum is
    an empty ENUM in BTF)."""
    if t.kind == M.FWD and t.encoding == M.ENUM:
        return M.ENUM
    return t.kind


class TypeView:
    """What the relocation engine needs of a set of types."""
    ptr_size = 8

    def type(self, tid: int) -> M.Type:
        raise NotImplementedError

    def by_essential_name(self, name: str) -> list:
        """Ids (ascending) of the types whose essential name is `name`."""
        raise NotImplementedError


class GraphView(TypeView):
    def __init__(self, g: M.TypeGraph):
        self.g = g
        self.ptr_size = g.ptr_size
        self._names: Optional[dict] = None

    def type(self, tid: int) -> M.Type:
        if not 0 <= tid < len(self.g.types):
            raise CoreError(f"type id {tid} does not exist")
        return self.g.types[tid]

    def by_essential_name(self, name: str) -> list:
        if self._names is None:
            names: dict = {}
            for tid, t in enumerate(self.g.types):
                if t.name:
                    names.setdefault(essential(t.name), []).append(tid)
            self._names = names
        return self._names.get(name, [])


# ---- walking types ----------------------------------------------------------------------

def skip_mods(v: TypeView, tid: int) -> tuple:
    """(id, type) after typedefs and qualifiers."""
    for _ in range(M.MAX_CHAIN):
        t = v.type(tid)
        if t.kind not in _MODS:
            return tid, t
        tid = t.ref or 0
    raise CoreError(f"type id {tid}: typedef/qualifier chain loops")


def resolve_size(v: TypeView, tid: int) -> int:
    """libbpf's btf__resolve_size: bytes of the type (arrays multiplied, pointers 8)."""
    mult = 1
    for _ in range(M.MAX_CHAIN):
        t = v.type(tid)
        k = t.kind
        if k in (M.INT, M.FLOAT, M.STRUCT, M.UNION, M.ENUM):
            if t.size is None:
                raise CoreError(f"type id {tid} ({k} {t.name}) has no size")
            return mult * t.size
        if k == M.PTR:
            return mult * (t.size or v.ptr_size)
        if k in _MODS:
            tid = t.ref or 0
        elif k == M.ARRAY:
            mult *= t.nelems or 0
            tid = t.ref or 0
        else:
            raise CoreError(f"type id {tid} ({kind_of(t)}) has no size")
    raise CoreError(f"type id {tid}: chain loops")


@dataclass
class Spec:
    """A field access path (libbpf's bpf_core_spec): high-level accessors (type id, index,
    name or None for an array index), the raw access string, the bit offset it reaches."""
    view: TypeView
    root: int
    kind: int
    acc: list = field(default_factory=list)
    raw: list = field(default_factory=list)
    bit_offset: int = 0


def parse_local(v: TypeView, root: int, relo: E.CoreRelo) -> Spec:
    """The relocation's local spec (bpf_core_parse_spec)."""
    s = relo.access
    if not s or s.startswith(":"):
        raise CoreError(f"empty or malformed access string {s!r}")
    spec = Spec(v, root, relo.kind)
    if relo.kind in E.TYPE_KINDS:
        if s != "0":
            raise CoreError(f"type relocation with access string {s!r} (must be '0')")
        return spec
    try:
        raw = [int(x) for x in s.split(":")]
    except ValueError:
        raise CoreError(f"malformed access string {s!r}") from None
    if len(raw) > MAX_SPEC:
        raise CoreError(f"access string {s!r} is longer than {MAX_SPEC}")
    spec.raw = raw
    tid, t = skip_mods(v, root)
    idx = raw[0]
    if idx < 0:
        raise CoreError(f"negative index in access string {s!r}")
    if relo.kind in E.ENUMVAL_KINDS:
        if kind_of(t) != M.ENUM or len(raw) > 1 or idx >= len(t.enumerators or ()):
            raise CoreError(f"enum-value relocation {s!r} on a type that is not such an enum")
        spec.acc.append((tid, idx, t.enumerators[idx][0]))
        return spec
    spec.acc.append((tid, idx, None))
    spec.bit_offset = idx * resolve_size(v, tid) * 8
    for i in range(1, len(raw)):
        tid, t = skip_mods(v, tid)
        idx = raw[i]
        if idx < 0:
            raise CoreError(f"negative index in access string {s!r}")
        if t.kind in M.COMPOSITE:
            if idx >= len(t.members or ()):
                raise CoreError(f"access string {s!r}: member #{idx} of a type with "
                                f"{len(t.members or ())}")
            m = t.members[idx]
            spec.bit_offset += m.bit_offset
            if m.name:
                spec.acc.append((tid, idx, m.name))
            tid = m.type
        elif t.kind == M.ARRAY:
            elem, _ = skip_mods(v, t.ref or 0)
            if not _is_flex(v, spec.acc[-1], t) and idx >= (t.nelems or 0):
                raise CoreError(f"access string {s!r}: index {idx} past an array of "
                                f"{t.nelems}")
            spec.acc.append((elem, idx, None))
            spec.bit_offset += idx * resolve_size(v, elem) * 8
            tid = elem
        else:
            raise CoreError(f"access string {s!r} goes into a {kind_of(t)}")
    return spec


def _is_flex(v: TypeView, acc: tuple, arr: M.Type) -> bool:
    """A flexible array member: unsized, the last member of the struct accessed."""
    tid, idx, name = acc
    if not name or arr.nelems:
        return False
    return idx == len(v.type(tid).members or ()) - 1


def fields_compat(lv: TypeView, lid: int, tv: TypeView, tid: int) -> bool:
    for _ in range(MAX_DEPTH):
        lid, lt = skip_mods(lv, lid)
        tid, tt = skip_mods(tv, tid)
        if lt.kind in M.COMPOSITE and tt.kind in M.COMPOSITE:
            return True
        lk, tk = kind_of(lt), kind_of(tt)
        if lk != tk:
            return False
        if lk in (M.PTR, M.FLOAT):
            return True
        if lk in (M.FWD, M.ENUM):
            a, b = essential(lt.name), essential(tt.name)
            return not a or not b or a == b
        if lk == M.INT:
            return True               # the model holds no bitfield-style (offset) ints
        if lk == M.ARRAY:
            lid, tid = lt.ref or 0, tt.ref or 0
            continue
        return False
    raise CoreError("array nesting too deep")


def _match_member(lv: TypeView, local_acc: tuple, tv: TypeView, targ_id: int, spec: Spec,
                  depth: int = 0):
    """(found, next target id): the local named member looked up in target `targ_id`,
    through anonymous members (bpf_core_match_member)."""
    targ_id, tt = skip_mods(tv, targ_id)
    if tt.kind not in M.COMPOSITE:
        return False, None
    lt = lv.type(local_acc[0])
    lm = lt.members[local_acc[1]]
    for i, m in enumerate(tt.members or ()):
        if len(spec.raw) >= MAX_SPEC:
            raise CoreError("struct/union/array nesting too deep")
        spec.bit_offset += m.bit_offset
        spec.raw.append(i)
        if not m.name:
            found, nxt = _match_member(lv, local_acc, tv, m.type, spec, depth + 1)
            if found:
                return found, nxt
        elif m.name == lm.name:
            spec.acc.append((targ_id, i, m.name))
            if fields_compat(lv, lm.type, tv, m.type):
                return True, m.type
            spec.acc.pop()
            return False, None
        spec.bit_offset -= m.bit_offset
        spec.raw.pop()
    return False, None


def spec_match(local: Spec, tv: TypeView, targ_id: int) -> Optional[Spec]:
    """The target spec of `local` in candidate `targ_id`, or None if it does not match."""
    lv = local.view
    spec = Spec(tv, targ_id, local.kind)
    if local.kind in E.TYPE_KINDS:
        ok = (types_match(lv, local.root, tv, targ_id) if local.kind == E.TYPE_MATCHES
              else types_compat(lv, local.root, tv, targ_id))
        return spec if ok else None
    if local.kind in E.ENUMVAL_KINDS:
        tid, tt = skip_mods(tv, targ_id)
        if kind_of(tt) != M.ENUM:
            return None
        want = essential(local.acc[0][2])
        for i, (name, _v) in enumerate(tt.enumerators or ()):
            if essential(name) == want:
                spec.acc.append((tid, i, name))
                spec.raw.append(i)
                return spec
        return None
    tid = targ_id
    for i, (lid, lidx, lname) in enumerate(local.acc):
        tid, tt = skip_mods(tv, tid)
        if lname:
            found, nxt = _match_member(lv, (lid, lidx, lname), tv, tid, spec)
            if not found:
                return None
            tid = nxt
        else:
            if i > 0:
                if tt.kind != M.ARRAY:
                    return None
                if not _is_flex(tv, spec.acc[-1], tt) and lidx >= (tt.nelems or 0):
                    return None
                tid, _ = skip_mods(tv, tt.ref or 0)
            if len(spec.raw) >= MAX_SPEC:
                raise CoreError("struct/union/array nesting too deep")
            spec.acc.append((tid, lidx, None))
            spec.raw.append(lidx)
            spec.bit_offset += lidx * resolve_size(tv, tid) * 8
    return spec


def types_compat(lv: TypeView, lid: int, tv: TypeView, tid: int, level: int = MAX_DEPTH) -> bool:
    """bpf_core_types_are_compat (names of the roots were matched by the caller)."""
    if kind_of(lv.type(lid)) != kind_of(tv.type(tid)):
        return False
    for _ in range(MAX_DEPTH):
        lid, lt = skip_mods(lv, lid)
        tid, tt = skip_mods(tv, tid)
        lk, tk = kind_of(lt), kind_of(tt)
        if lk != tk:
            return False
        if lk in (M.VOID, M.STRUCT, M.UNION, M.ENUM, M.FWD):
            return True
        if lk == M.INT:
            return True
        if lk == M.PTR or lk == M.ARRAY:
            lid, tid = lt.ref or 0, tt.ref or 0
            continue
        if lk == M.FUNC_PROTO:
            lp, tp = lt.params or [], tt.params or []
            if len(lp) + lt.variadic != len(tp) + tt.variadic:
                return False
            for a, b in zip(lp, tp):
                if level <= 0:
                    raise CoreError("function prototypes nest too deep")
                ai, _ = skip_mods(lv, a.type)
                bi, _ = skip_mods(tv, b.type)
                if not types_compat(lv, ai, tv, bi, level - 1):
                    return False
            lid, _ = skip_mods(lv, lt.ref or 0)
            tid, _ = skip_mods(tv, tt.ref or 0)
            continue
        return False
    raise CoreError("types nest too deep")


def _names_match(a: Optional[str], b: Optional[str]) -> bool:
    if not b:
        return not a
    return essential(a) == essential(b)


def types_match(lv: TypeView, lid: int, tv: TypeView, tid: int, behind_ptr: bool = False,
                level: int = MAX_DEPTH) -> bool:
    """bpf_core_types_match (TYPE_MATCHES)."""
    if level <= 0:
        raise CoreError("types nest too deep for a type match")
    for _ in range(MAX_DEPTH):
        lid, lt = skip_mods(lv, lid)
        tid, tt = skip_mods(tv, tid)
        if not _names_match(lt.name, tt.name):
            return False
        lk, tk = kind_of(lt), kind_of(tt)
        if lk == M.VOID:
            return tk == M.VOID
        if lk == M.FWD:
            lunion = lt.encoding == M.UNION
            if behind_ptr and tk != M.FWD:
                return (tk == M.STRUCT and not lunion) or (tk == M.UNION and lunion)
            return tk == M.FWD and (tt.encoding == M.UNION) == lunion
        if lk == M.ENUM:
            if tk != M.ENUM or (lt.size or 4) != (tt.size or 4):
                return False
            lvals = lt.enumerators or []
            tvals = tt.enumerators or []
            if len(lvals) > len(tvals):
                return False
            return all(any(_names_match(n, m) for m, _ in tvals) for n, _ in lvals)
        if lk in M.COMPOSITE:
            if behind_ptr:
                if lk == tk:
                    return True
                return tk == M.FWD and (lk == M.UNION) == (tt.encoding == M.UNION)
            if lk != tk:
                return False
            lms, tms = lt.members or [], tt.members or []
            if len(lms) > len(tms):
                return False
            for lm in lms:
                if not any(_names_match(lm.name, tm.name) and
                           types_match(lv, lm.type, tv, tm.type, behind_ptr, level - 1)
                           for tm in tms):
                    return False
            return True
        if lk == M.INT:
            return tk == M.INT and lt.size == tt.size and bool(lt.signed) == bool(tt.signed)
        if lk == M.PTR:
            if tk != M.PTR:
                return False
            behind_ptr = True
            lid, tid = lt.ref or 0, tt.ref or 0
            continue
        if lk == M.ARRAY:
            if tk != M.ARRAY or (lt.nelems or 0) != (tt.nelems or 0):
                return False
            lid, tid = lt.ref or 0, tt.ref or 0
            continue
        if lk == M.FUNC_PROTO:
            if tk != M.FUNC_PROTO:
                return False
            lp, tp = lt.params or [], tt.params or []
            if len(lp) + lt.variadic != len(tp) + tt.variadic:
                return False
            for a, b in zip(lp, tp):
                if not types_match(lv, a.type, tv, b.type, behind_ptr, level - 1):
                    return False
            lid, tid = lt.ref or 0, tt.ref or 0
            continue
        return False
    raise CoreError("types nest too deep for a type match")


# ---- values ------------------------------------------------------------------------------

_POISON = object()


def _field_value(kind: int, spec: Optional[Spec]):
    """bpf_core_calc_field_relo: the value for this kind, or _POISON."""
    if kind == 2:                                  # field_exists
        return 1 if spec else 0
    if spec is None:
        return _POISON
    v = spec.view
    tid, idx, name = spec.acc[-1]
    if not name:                                   # an array element
        if kind == 0:
            return spec.bit_offset // 8
        if kind == 1:
            return resolve_size(v, tid)
        raise CoreError(f"relocation {E.RELO_KINDS[kind]} cannot apply to an array element")
    m = v.type(tid).members[idx]
    mid, mt = skip_mods(v, m.type)
    bit_off, bit_sz = spec.bit_offset, m.bit_size
    if bit_sz:
        byte_sz = mt.size or 0
        if byte_sz <= 0:
            raise CoreError(f"bitfield {name} of a type without size")
        byte_off = bit_off // 8 // byte_sz * byte_sz
        while bit_off + bit_sz - byte_off * 8 > byte_sz * 8:
            if byte_sz >= 8:
                raise CoreError(f"bitfield {name} cannot be read with one 64-bit load")
            byte_sz *= 2
            byte_off = bit_off // 8 // byte_sz * byte_sz
    else:
        byte_sz = resolve_size(v, mid)
        byte_off = bit_off // 8
        bit_sz = byte_sz * 8
    if kind == 0:
        return byte_off
    if kind == 1:
        return byte_sz
    if kind == 3:
        return int((kind_of(mt) == M.ENUM and bool(mt.signed)) or
                   (mt.kind == M.INT and bool(mt.signed) and mt.encoding != "bool"))
    if kind == 4:                                  # little-endian targets
        return 64 - (bit_off + bit_sz - byte_off * 8)
    return 64 - bit_sz                             # 5: rshift


def _value(relo: E.CoreRelo, spec: Optional[Spec]):
    k = relo.kind
    if k in E.FIELD_KINDS:
        return _field_value(k, spec)
    if k in E.TYPE_KINDS:
        if spec is None:
            return 0
        if k == 7:                                 # type_id_target: the target's type id
            return spec.root
        if k in (8, 12):
            return 1
        return resolve_size(spec.view, spec.root)
    if k == 10:
        return 1 if spec else 0
    if spec is None:
        return _POISON
    tid, idx, _ = spec.acc[0]
    t = spec.view.type(tid)
    value = t.enumerators[idx][1]
    if (t.size or 4) <= 4:                         # a 32-bit BTF value is signed, widened
        value &= 0xFFFFFFFF
        if value >= 1 << 31:
            value -= 1 << 32
    return value & ((1 << 64) - 1)


@dataclass
class Relocated:
    relo: E.CoreRelo
    local: Optional[Spec]
    target: Optional[Spec]                         # the first matching candidate
    candidates: list = field(default_factory=list)  # ids of the target types of that name
    matched: list = field(default_factory=list)     # ids of those that match
    value: object = None                           # what libbpf patches in (None: poison)
    obj: object = None                             # the BpfObject it belongs to

    @property
    def poisoned(self) -> bool:
        return self.value is None and self.relo.kind != E.TYPE_ID_LOCAL


def relocate(obj: E.BpfObject, relo: E.CoreRelo, target: TypeView,
             local_view: Optional[TypeView] = None, cands_cache: Optional[dict] = None) -> Relocated:
    """Resolve one relocation of `obj` against `target` (bpf_core_calc_relo_insn)."""
    lv = local_view or GraphView(obj.graph)
    root = obj.local_type(relo.type_id)
    local = parse_local(lv, root, relo)
    if relo.kind == E.TYPE_ID_LOCAL:
        return Relocated(relo, local, None, value=relo.type_id, obj=obj)
    lt = lv.type(root)
    if not lt.name:
        raise CoreError(f"{E.RELO_KINDS[relo.kind]} relocation on an anonymous type "
                        f"(libbpf does not support it)")
    ess = essential(lt.name)
    key = (kind_of(lt), ess)
    cands = None if cands_cache is None else cands_cache.get(key)
    if cands is None:
        cands = [tid for tid in target.by_essential_name(ess)
                 if kind_of(target.type(tid)) == key[0]]
        if cands_cache is not None:
            cands_cache[key] = cands
    out = Relocated(relo, local, None, list(cands), obj=obj)
    chosen = None
    for tid in cands:
        spec = spec_match(local, target, tid)
        if spec is None:
            continue
        value = _value(relo, spec)
        if chosen is None:
            chosen, out.target, out.value = spec, spec, value
        elif spec.bit_offset != chosen.bit_offset:
            raise CoreError(f"field offset ambiguity: candidates [{chosen.root}] and "
                            f"[{tid}] give bit offsets {chosen.bit_offset} and "
                            f"{spec.bit_offset}")
        elif (value is _POISON) != (out.value is _POISON) or value != out.value:
            raise CoreError(f"relocation decision ambiguity: candidates [{chosen.root}] and "
                            f"[{tid}] give {out.value} and {value}")
        out.matched.append(tid)
    if chosen is None:
        out.value = _value(relo, None)
    if out.value is _POISON:
        out.value = None
    return out
