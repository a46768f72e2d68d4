"""Struct layouts from a Go binary's own runtime type descriptors: no DWARF, no symbols needed.

Every type a Go program can reflect on, put in an interface or allocate on the heap has a
descriptor in the module's type region [types, etypes) (runtime.firstmoduledata, see
moduledata.py), stripped binaries included.  Layout (p = pointer size; same from Go 1.14 to
1.27):

  Type        size p, ptrdata p, hash u32, tflag u8, align u8, fieldAlign u8, kind u8
              (low 5 bits), equal p, gcdata p, str i32 (nameOff), ptrToThis i32 (typeOff):
              4p+16 bytes.  tflag 1 uncommon, 2 extra star (str is "*T", drop the star),
              4 named.  nameOff/typeOff are offsets from `types`.
  after it    the kind's own part: ptr/slice elem p; array elem, slice, len; chan elem, dir;
              func inCount u16, outCount u16 (top bit: variadic), padded to p; interface
              pkgPath name, methods slice (imethod: name i32, typ i32); struct pkgPath name,
              fields slice of {name *byte, typ *Type, offset uintptr}; map key, elem, ...
  uncommon    (tflag 1) pkgPath nameOff i32, mcount u16, xcount u16, moff u32, pad u32;
              methods {name i32, mtyp i32, ifn i32, tfn i32} at uncommon+moff.
  func params the in+out *Type array right after the func part (and uncommon, if any).
  name        flags u8 (1 exported, 2 tag follows, 4 pkgPath follows, 8 embedded [1.19+]),
              length (uvarint from Go 1.17, 2 bytes big-endian before), bytes.
  field       offset up to Go 1.18 is `offsetAnon` = offset<<1 | embedded; from 1.19 the
              plain offset (embedded moved into the name's flags).

Where they are found:
  typelinks   (Go <= 1.26) []int32 offsets from `types`, sorted by type string: every
              unnamed composite type, so every `*T` whose T has a descriptor (a named type's
              descriptor always refers to its `*T` through ptrToThis).  A named struct T is
              found by binary search for "*pkg.T", then the pointer's elem, checked by its
              package path.
  Go 1.27     no typelinks: the same descriptors lie back to back, sorted by string, from
              types+p to types+typedesclen, each DescriptorSize() long (kind part, uncommon,
              the fields/params/imethods array, then mcount methods), aligned to p.  The
              map part is 4p+8 (hmap, <= 1.23), 8p (Swiss tables, 1.24-1.26), 11p (1.27).
  the closure (`walk`) every type reachable from those roots and from the itabs' types:
              elems, fields, params, interface and method types, ptrToThis.  Iterative,
              each type visited once, bounded by the region.

Nothing here trusts the bytes: every read is bounded by the region, counts by what fits in
it, and a struct layout is only given when its fields are consistent (in order, inside the
struct, not overlapping, each field's type a valid descriptor); otherwise the struct is
reported as unreadable and the caller falls back to other sources.
"""
from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field as dc_field
from fnmatch import fnmatchcase
from typing import Dict, Iterator, List, Optional, Tuple

from dbhive.elf import ElfFile
from dbhive.errors import BadPath, ElfError, GoFormatError
from dbhive.leb128 import uleb128

from .buildinfo import parse_version
from .moduledata import ModuleData
from .pclntab import MAGIC_12, MAGIC_116, MAGIC_118, Pclntab

TFLAG_UNCOMMON, TFLAG_EXTRA_STAR, TFLAG_NAMED = 1, 2, 4
KIND_MASK = 0x1F
(K_BOOL, K_INT, K_INT8, K_INT16, K_INT32, K_INT64, K_UINT, K_UINT8, K_UINT16, K_UINT32,
 K_UINT64, K_UINTPTR, K_FLOAT32, K_FLOAT64, K_COMPLEX64, K_COMPLEX128, K_ARRAY, K_CHAN, K_FUNC,
 K_INTERFACE, K_MAP, K_PTR, K_SLICE, K_STRING, K_STRUCT, K_UNSAFE_POINTER) = range(1, 27)
NAME_EMBEDDED = 8
MAX_NAME = 1 << 16          # bytes in one name record
MAX_FIELDS = 1 << 14        # fields of one struct
MAX_METHODS = 1 << 16
UNCOMMON_SIZE, METHOD_SIZE, IMETHOD_SIZE = 16, 16, 8


class TypeInfoError(GoFormatError):
    """The type descriptors cannot be read (one-line message)."""


class _Bad(Exception):
    """A read outside the region or a record that does not parse (internal)."""


@dataclass(frozen=True)
class Field:
    name: str
    offset: int
    size: int
    type: str            # the field type's string as reflect prints it ("*tls.Conn")
    embedded: bool


@dataclass
class Layout:
    name: str            # "crypto/tls.Conn"
    size: int
    align: int
    address: int         # of the descriptor
    fields: List[Field] = dc_field(default_factory=list)

    def offsets(self) -> Dict[str, int]:
        return {f.name: f.offset for f in self.fields}

    def to_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "align": self.align,
                "descriptor": self.address, "source": "typeinfo",
                "fields": [{"name": f.name, "offset": f.offset, "size": f.size, "type": f.type,
                            "embedded": f.embedded} for f in self.fields]}


@dataclass(frozen=True)
class Encoding:
    """What differs between Go versions in the descriptors this reader uses."""
    varint_names: bool       # Go 1.17+
    offset_anon: bool        # Go <= 1.18
    typedesc_walk: bool      # Go 1.27: no typelinks
    map_words: Optional[Tuple[int, int]] = None   # map part = a*p + b bytes (None: unknown)


def split_type_name(full: str) -> Tuple[str, str]:
    """'crypto/tls.Conn' -> ('crypto/tls', 'Conn'); the type name is after the last dot."""
    pkg, dot, name = full.rpartition(".")
    if not dot or not pkg or not name:
        raise BadPath(f"{full!r} is not <package path>.<Type>")
    return pkg, name


def package_names(pkg_path: str) -> List[str]:
    """Names a package with this import path is likely declared with (the type string uses
    the package name, not the path): its last element, without a '.vN' or 'go-' dressing."""
    last = pkg_path.rsplit("/", 1)[-1]
    out = [last]
    for cand in (last.split(".", 1)[0], last[3:] if last.startswith("go-") else "",
                 last.replace("-", "_")):
        if cand and cand not in out:
            out.append(cand)
    return out


class Descriptors:
    """The type descriptors of one module."""

    def __init__(self, img: ElfFile, md: ModuleData, enc: Encoding):
        self.img, self.md, self.enc = img, md, enc
        self.p = p = img.ptr_size
        self.e = e = img.endian
        self.base = md.types
        seg = img.segment_for_vaddr(md.types)
        if seg is None or md.etypes <= md.types:
            raise TypeInfoError("type region outside the file")
        end = min(md.etypes, seg.vaddr + seg.filesz)
        # A view of the mapped file, not a copy: only the descriptors asked for are touched.
        try:
            self.region = img.segment_bytes(seg)[md.types - seg.vaddr:end - seg.vaddr]
        except ElfError as exc:             # a truncated file
            raise TypeInfoError(f"type region unreadable ({exc})") from None
        self.end = md.types + len(self.region)
        self.hsize = 4 * p + 16
        self._w = e + ("Q" if p == 8 else "I")
        self._hdr = struct.Struct(e + ("QQIBBBBQQii" if p == 8 else "IIIBBBBIIii"))
        self._types: Dict[int, tuple] = {}
        self._strings: Dict[int, str] = {}
        self._layouts: Dict[int, object] = {}
        self._sorted: Optional[List[int]] = None
        self._sorted_strings: Dict[int, str] = {}

    # --- raw reads (bounded by the region) --------------------------------------------------
    def _off(self, addr: int, n: int) -> int:
        o = addr - self.base
        if o < 0 or n < 0 or o + n > len(self.region):
            raise _Bad(f"0x{addr:x} outside the type region")
        return o

    def word(self, addr: int) -> int:
        return struct.unpack_from(self._w, self.region, self._off(addr, self.p))[0]

    def _unpack(self, fmt: str, addr: int):
        fmt = self.e + fmt
        return struct.unpack_from(fmt, self.region, self._off(addr, struct.calcsize(fmt)))

    def name(self, addr: int) -> Tuple[int, str, int]:
        """(flags, text, address after the text) of the name record at addr."""
        o = self._off(addr, 1)
        r = self.region
        flags = r[o]
        try:
            if self.enc.varint_names:
                n, pos = uleb128(r, o + 1)
            else:
                self._off(addr, 3)
                n, pos = (r[o + 1] << 8) | r[o + 2], o + 3
        except IndexError:
            raise _Bad(f"name at 0x{addr:x} runs past the type region") from None
        if n > MAX_NAME or pos + n > len(r):
            raise _Bad(f"name at 0x{addr:x} is {n} bytes long")
        try:
            text = bytes(r[pos:pos + n]).decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"name at 0x{addr:x} is not UTF-8") from None
        return flags, text, self.base + pos + n

    # --- type headers --------------------------------------------------------------------
    def header(self, t: int) -> tuple:
        """(size, ptrdata, tflag, align, kind, str nameOff, ptrToThis) of the type at t."""
        h = self._types.get(t)
        if h is None:
            if t % self.p:
                raise _Bad(f"type 0x{t:x} is not aligned")
            (size, ptrdata, _hash, tflag, align, _falign, kind, _eq, _gc, str_off,
             ptr_to) = self._hdr.unpack_from(self.region, self._off(t, self.hsize))
            kind &= KIND_MASK
            if not K_BOOL <= kind <= K_UNSAFE_POINTER or ptrdata > size or \
                    align == 0 or align & (align - 1) or align > 64:
                raise _Bad(f"0x{t:x} is not a type descriptor")
            h = (size, ptrdata, tflag, align, kind, str_off, ptr_to)
            self._types[t] = h
        return h

    def kind(self, t: int) -> int:
        return self.header(t)[4]

    def size(self, t: int) -> int:
        return self.header(t)[0]

    def string(self, t: int) -> str:
        """The type's string as reflect prints it ("*tls.Conn", "[]uint8")."""
        s = self._strings.get(t)
        if s is None:
            tflag, str_off = self.header(t)[2], self.header(t)[5]
            s = self.name(self.base + str_off)[1]
            if tflag & TFLAG_EXTRA_STAR:
                if not s.startswith("*"):
                    raise _Bad(f"type 0x{t:x}: extra-star string {s!r}")
                s = s[1:]
            self._strings[t] = s
        return s

    def _kind_part(self, kind: int) -> Optional[int]:
        p = self.p
        if kind == K_MAP:
            if self.enc.map_words is None:
                return None
            a, b = self.enc.map_words
            return a * p + b
        return {K_STRUCT: 4 * p, K_INTERFACE: 4 * p, K_PTR: p, K_SLICE: p, K_CHAN: 2 * p,
                K_ARRAY: 3 * p, K_FUNC: 8 if p == 8 else 4}.get(kind, 0)

    def uncommon(self, t: int) -> Optional[int]:
        """Address of the uncommon record (None when absent or not locatable: maps)."""
        _s, _pd, tflag, _a, kind, _so, _pt = self.header(t)
        if not tflag & TFLAG_UNCOMMON:
            return None
        part = self._kind_part(kind)
        return None if part is None else t + self.hsize + part

    def pkg_path(self, t: int) -> Optional[str]:
        u = self.uncommon(t)
        if u is None:
            return None
        off = self._unpack("i", u)[0]
        return self.name(self.base + off)[1] if off else None

    def full_name(self, t: int) -> Optional[str]:
        """'crypto/tls.Conn' for a named type; None for an unnamed one."""
        if not self.header(t)[2] & TFLAG_NAMED:
            return None
        s = self.string(t)
        pkg = self.pkg_path(t)
        if not pkg or "." not in s:
            return s
        return pkg + "." + s.split(".", 1)[1]

    def elem(self, t: int) -> int:
        """The element type of a pointer, slice, array or chan."""
        return self.word(t + self.hsize)

    # --- structs ---------------------------------------------------------------------------
    def _slice(self, addr: int, limit: int, rec: int) -> Tuple[int, int]:
        ptr, n, cap = self.word(addr), self.word(addr + self.p), self.word(addr + 2 * self.p)
        if n > cap or n > limit:
            raise _Bad(f"slice at 0x{addr:x} claims {n} elements")
        if n:
            self._off(ptr, n * rec)
        return ptr, n

    def struct_layout(self, t: int, name: Optional[str] = None) -> Layout:
        """The fields of the struct type at t, checked for consistency (raises _Bad)."""
        got = self._layouts.get(t)
        if isinstance(got, Layout):
            return got
        if isinstance(got, _Bad):
            raise got
        try:
            lay = self._read_struct(t, name)
        except _Bad as exc:
            self._layouts[t] = exc
            raise
        self._layouts[t] = lay
        return lay

    def _read_struct(self, t: int, name: Optional[str]) -> Layout:
        size, _pd, _tf, align, kind, _so, _pt = self.header(t)
        if kind != K_STRUCT:
            raise _Bad(f"0x{t:x} is not a struct")
        p = self.p
        ptr, n = self._slice(t + self.hsize + p, MAX_FIELDS, 3 * p)
        o = self._off(ptr, 3 * p * n) if n else 0
        raw = self.region[o:o + 3 * p * n]
        fields: List[Field] = []
        end_prev = 0
        fmt = self.e + ("QQQ" if p == 8 else "III")
        for i in range(n):
            name_at, typ, off = struct.unpack_from(fmt, raw, 3 * p * i)
            flags, fname, _ = self.name(name_at)
            embedded = bool(flags & NAME_EMBEDDED)
            if self.enc.offset_anon:
                embedded, off = bool(off & 1), off >> 1
            fsize = self.size(typ)
            fstr = self.string(typ)
            if not fname or off < end_prev or off + fsize > size:
                raise _Bad(f"struct at 0x{t:x}: field {fname!r} at {off} (size {fsize}) "
                           f"does not fit after {end_prev} in {size} bytes")
            end_prev = off + fsize
            fields.append(Field(fname, off, fsize, fstr, embedded))
        return Layout(name or self.full_name(t) or self.string(t), size, align, t, fields)

    # --- finding types by string -------------------------------------------------------------
    def sorted_types(self) -> List[int]:
        """The typelinks (Go <= 1.26) or the typelink descriptors (1.27): sorted by string."""
        if self._sorted is None:
            self._sorted = self._typedesc_walk() if self.enc.typedesc_walk else \
                list(self.md.typelinks)
        return self._sorted

    def _sorted_string(self, i: int) -> str:
        s = self._sorted_strings.get(i)
        if s is None:
            try:
                s = self.string(self._sorted[i])
            except _Bad:
                s = ""
            self._sorted_strings[i] = s
        return s

    def by_string(self, s: str) -> List[int]:
        """Addresses of the sorted types whose string is s (binary search)."""
        types = self.sorted_types()
        lo, hi = 0, len(types)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._sorted_string(mid) < s:
                lo = mid + 1
            else:
                hi = mid
        out = []
        while lo < len(types) and self._sorted_string(lo) == s:
            out.append(types[lo])
            lo += 1
        return out

    def find_struct(self, full: str) -> Tuple[Optional[Layout], str]:
        """(layout, "") for the named struct `full` ("crypto/tls.Conn"), or (None, why)."""
        pkg, tname = split_type_name(full)
        broken = None
        for pname in package_names(pkg):
            for ptr in self.by_string(f"*{pname}.{tname}"):
                try:
                    if self.kind(ptr) != K_PTR:
                        continue
                    t = self.elem(ptr)
                    if self.kind(t) != K_STRUCT or self.full_name(t) != full:
                        continue
                    return self.struct_layout(t, full), ""
                except _Bad as exc:
                    broken = str(exc)
        if broken:
            return None, f"type descriptor of {full} unreadable ({broken})"
        return None, f"no type descriptor for {full}"

    def _typedesc_walk(self) -> List[int]:
        """Go 1.27: the typelink descriptors back to back from types+p to types+typedesclen.
        A tight loop (tens of thousands of descriptors in a large binary): Go's DescriptorSize()
        inlined, every read bounded by the region."""
        p, hs, r, e = self.p, self.hsize, self.region, self.e
        part = {K_STRUCT: 4 * p, K_INTERFACE: 4 * p, K_PTR: p, K_SLICE: p, K_CHAN: 2 * p,
                K_ARRAY: 3 * p, K_FUNC: 8 if p == 8 else 4}
        if self.enc.map_words is not None:
            part[K_MAP] = self.enc.map_words[0] * p + self.enc.map_words[1]
        word = struct.Struct(self._w).unpack_from
        u16 = struct.Struct(e + "H").unpack_from
        out = []
        o, end = p, self.md.typedesclen
        if end > len(r):
            raise TypeInfoError(f"typedesclen 0x{end:x} is past the type region")
        while o < end:
            o = (o + p - 1) // p * p
            if o + hs > len(r):
                break
            tflag, kind = r[o + 2 * p + 4], r[o + 2 * p + 7] & KIND_MASK
            if not K_BOOL <= kind <= K_UNSAFE_POINTER:
                break
            n = hs + part.get(kind, 0 if kind != K_MAP else -1 << 40)
            if kind in (K_STRUCT, K_INTERFACE):
                if o + hs + 3 * p > len(r):
                    break
                count = word(r, o + hs + 2 * p)[0]
                n += count * (3 * p if kind == K_STRUCT else IMETHOD_SIZE)
            elif kind == K_FUNC:
                if o + hs + 4 > len(r):
                    break
                n += p * (u16(r, o + hs)[0] + (u16(r, o + hs + 2)[0] & 0x7FFF))
            if tflag & TFLAG_UNCOMMON and n > 0:
                at = o + hs + part.get(kind, 0) + 4
                if at + 2 > len(r):
                    break
                n += UNCOMMON_SIZE + METHOD_SIZE * u16(r, at)[0]
            if n <= 0 or o + n > len(r):
                break
            out.append(self.base + o)
            o += n
        if o != end:
            raise TypeInfoError(f"type descriptors do not end at types+typedesclen "
                                f"(0x{self.base + end:x}; unreadable at 0x{self.base + o:x})")
        return out

    # --- the closure of reachable types --------------------------------------------------
    def roots(self) -> List[int]:
        out = list(self.sorted_types())
        for itab in self.md.itablinks:
            try:
                out.extend((self.word(itab), self.word(itab + self.p)))
            except _Bad:
                continue
        return out

    def _edges(self, t: int) -> List[int]:
        p, hs = self.p, self.hsize
        _s, _pd, tflag, _a, kind, _so, ptr_to = self.header(t)
        out = []
        if ptr_to:
            out.append(self.base + ptr_to)
        if kind in (K_PTR, K_SLICE, K_ARRAY, K_CHAN):
            out.append(self.word(t + hs))
        elif kind == K_MAP:
            out.extend((self.word(t + hs), self.word(t + hs + p)))
        elif kind == K_STRUCT:
            ptr, n = self._slice(t + hs + p, MAX_FIELDS, 3 * p)
            out.extend(self.word(ptr + 3 * p * i + p) for i in range(n))
        elif kind == K_INTERFACE:
            ptr, n = self._slice(t + hs + p, MAX_METHODS, IMETHOD_SIZE)
            out.extend(self.base + self._unpack("i", ptr + IMETHOD_SIZE * i + 4)[0]
                       for i in range(n))
        elif kind == K_FUNC:
            nin, nout = self._unpack("HH", t + hs)
            at = t + hs + self._kind_part(K_FUNC) + (UNCOMMON_SIZE if tflag & TFLAG_UNCOMMON else 0)
            out.extend(self.word(at + p * i) for i in range(nin + (nout & 0x7FFF)))
        u = self.uncommon(t)
        if u is not None:
            mcount, _x, moff = self._unpack("HHI", u + 4)
            for i in range(min(mcount, MAX_METHODS)):
                mtyp = self._unpack("i", u + moff + METHOD_SIZE * i + 4)[0]
                if mtyp > 0:                 # -1/0: method type dropped by the linker
                    out.append(self.base + mtyp)
        return out

    def walk(self) -> Iterator[int]:
        """Every type reachable from the roots, each once (iterative; a cycle is just a type
        already seen).  Descriptors that do not parse are skipped, not followed."""
        seen = set()
        queue = deque(self.roots())
        limit = len(self.region) // self.hsize + 1
        while queue and len(seen) < limit:
            t = queue.popleft()
            if t in seen:
                continue
            seen.add(t)
            try:
                edges = self._edges(t)
            except _Bad:
                continue
            yield t
            queue.extend(e for e in edges if e not in seen)

    def structs(self, pattern: Optional[str] = None) -> List[Layout]:
        """Layouts of the named structs reachable in the binary (matching a glob pattern on
        the full name), sorted by name; unreadable ones are left out."""
        out: Dict[str, Layout] = {}
        for t in self.walk():
            try:
                if self.kind(t) != K_STRUCT:
                    continue
                full = self.full_name(t)
                if full is None or full in out or (pattern and not fnmatchcase(full, pattern)):
                    continue
                out[full] = self.struct_layout(t, full)
            except _Bad:
                continue
        return [out[k] for k in sorted(out)]


def _map_words(minor: Optional[int], walk: bool, experiments: str) -> Optional[Tuple[int, int]]:
    """The map type's own part as (words, bytes): hmap-era 4p+8, Swiss tables (1.24-1.26)
    8p, Go 1.27's 11p.  None when unknown."""
    if walk and (minor is None or minor == 27):
        return (11, 0)
    if minor is None:
        return None
    if minor <= 23 or (minor <= 25 and "noswissmap" in experiments):
        return (4, 8)
    if minor <= 26:
        return (8, 0)
    if minor == 27:
        return (11, 0)
    return None


def encoding_candidates(tab: Pclntab, version: Optional[str], md: ModuleData,
                        experiments: str = "") -> List[Encoding]:
    """The encodings the binary may use: one when the Go version is known, else those its
    pclntab format allows (open_descriptors tries them)."""
    v = parse_version(version) if version else None
    walk = md.typedesclen > 0
    if v is not None and v[0] == 1:
        m = v[1]
        return [Encoding(m >= 17, m <= 18, walk, _map_words(m, walk, experiments))]
    if tab.magic == MAGIC_12:
        return [Encoding(False, True, walk, (4, 8))]
    if tab.magic == MAGIC_116:
        return [Encoding(True, True, walk, (4, 8)), Encoding(False, True, walk, (4, 8))]
    if tab.magic == MAGIC_118:
        return [Encoding(True, False, walk, (4, 8)), Encoding(True, True, walk, (4, 8))]
    return [Encoding(True, False, walk, _map_words(None, walk, experiments))]


PROBE_STRUCTS = 64


def open_descriptors(img: ElfFile, tab: Pclntab, md: ModuleData, version: Optional[str],
                     experiments: str = "") -> Descriptors:
    """The module's descriptors in the one encoding they read consistently in.  Raises
    TypeInfoError when none (or more than one, with differing results) fits."""
    cands = encoding_candidates(tab, version, md, experiments)
    if len(cands) == 1:
        d = Descriptors(img, md, cands[0])
        d.sorted_types()            # Go 1.27: walk now, so a broken run says so up front
        return d
    fits = []
    for enc in cands:
        d = Descriptors(img, md, enc)
        score = _probe(d)
        if score:
            fits.append((score, d))
    if len(fits) != 1:
        raise TypeInfoError("cannot tell how this binary's type descriptors are encoded "
                            f"({len(fits)} of {len(cands)} encodings fit)")
    return fits[0][1]


def _probe(d: Descriptors) -> int:
    """How many of the first struct layouts reached through pointer typelinks read
    consistently in d's encoding (0 if any does not)."""
    good = 0
    try:
        types = d.sorted_types()
    except TypeInfoError:
        return 0
    for ptr in types:
        try:
            if d.kind(ptr) != K_PTR or d.kind(d.elem(ptr)) != K_STRUCT:
                continue
            lay = d.struct_layout(d.elem(ptr))
        except _Bad:
            return 0
        if len(lay.fields) >= 2:
            good += 1
            if good >= PROBE_STRUCTS:
                break
    return good
