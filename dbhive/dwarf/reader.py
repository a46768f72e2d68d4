"""One process's view of a file's DWARF: units, abbreviation plans, string tables, and the
per-unit scan -> resolve step.  `read_dwarf` (dwarf.py) runs one of these per worker."""
from __future__ import annotations

import bisect
import collections
import struct

from .keys import KeyTable, UnitInterner
from .sections import DebugFile, SectionError, find_altfile
from .forms import (ALT_BASE, TAG, TYPES_BASE, WANT_IMPORT, WANT_UNIT, Decoders,
                          FormError, c_enabled, parse_abbrev_table, uleb)
from .scan import _AGG_KIND, _QUAL_KIND, _TAG_ACTION, UnitScan, make_plans
from .units import (DW_UT_partial, DW_UT_split_type, DW_UT_type, iter_unit_headers,
                          line_file_names)


_TAG_PARTIAL_UNIT = TAG["partial_unit"]


class UnitError(Exception):
    """A FormError located: file, section, offset."""

    def __init__(self, path, section, offset, msg):
        where = f"0x{offset:x}" if isinstance(offset, int) else "?"
        super().__init__(f"{path}: {section} at offset {where}: {msg}")
        self.path, self.section, self.offset = path, section, offset


class StrTab:
    """A NUL-terminated string section with a decode cache."""
    __slots__ = ("data", "cache", "name")

    def __init__(self, data, name):
        self.data = data or b""
        self.cache = {}
        self.name = name

    def get(self, off):
        s = self.cache.get(off)
        if s is None:
            d = self.data
            if not 0 <= off < len(d):
                raise FormError(f"string offset 0x{off:x} outside {self.name}")
            e = d.find(b"\0", off)
            if e < 0:
                raise FormError(f"unterminated string at 0x{off:x} in {self.name}")
            s = self.cache[off] = d[off:e].decode("utf-8", "replace")
        return s


class FileTables:
    """Per-ELF-file tables a unit's decoders reach through `unit.file`."""

    def __init__(self, df: DebugFile, alt: "FileTables | None"):
        s = df.sections
        sfx = ".dwo" if df.is_dwo else ""
        self.path = df.path
        self.info = s.get("info", b"")
        self.types = s.get("types", b"")
        self.abbrev = s.get("abbrev", b"")
        self.line = s.get("line", b"")
        self.str = StrTab(s.get("str"), ".debug_str" + sfx)
        self.line_str = StrTab(s.get("line_str"), ".debug_line_str")
        self.str_offsets = s.get("str_offsets", b"")
        self.alt = alt
        self.is_dwo = df.is_dwo
        self.sig: dict = {}          # type signature -> DIE offset (the reader's, shared)


def _strp(cu, x):
    return cu.file.str.get(x)


def _line_strp(cu, x):
    return cu.file.line_str.get(x)


def _alt_strp(cu, x):
    alt = cu.file.alt
    if alt is None:
        raise FormError("DW_FORM_GNU_strp_alt without a supplementary (.gnu_debugaltlink) file")
    return alt.str.get(x)


def _strx(cu, idx):
    ft = cu.file
    base = cu.str_offsets_base
    if base is None:
        base = 8 if (ft.is_dwo and cu.version >= 5) else 0
    osz = cu.off_size
    p = base + idx * osz
    so = ft.str_offsets
    if p + osz > len(so):
        raise FormError(f"string index {idx} outside .debug_str_offsets")
    return ft.str.get(int.from_bytes(so[p:p + osz], "little"))


def _sig(cu, sig):
    off = cu.file.sig.get(sig)
    if off is None:
        raise FormError(f"no type unit with signature 0x{sig:016x}")
    return off


# The decoders reach everything file-specific through the unit (`cu.file`), so one set of
# compiled decoders serves every file a process reads (a thousand kernel modules share
# most abbreviation shapes: compiling them once per file was a fifth of the time).
_DECODERS = Decoders(dict(STRP=_strp, LINE_STRP=_line_strp, ALT_STRP=_alt_strp, STRX=_strx,
                          SIG=_sig, ALT_BASE=ALT_BASE))


# The C scanner (dwarf/_cscan.c: the same walk and records as scan.UnitScan, which is the
# reference and the fallback).  DBHIVE_DWARF_PURE=1 forces the Python one.
try:
    from . import _cscan
except ImportError:                      # not built: the pure-Python scanner
    _cscan = None
if _cscan is not None:
    from .. import model as _M
    _cscan.configure(FormError, _TAG_ACTION, _QUAL_KIND, _AGG_KIND, _M.ENUM,
                     dict(STRP=_strp, LINE_STRP=_line_strp, ALT_STRP=_alt_strp, STRX=_strx,
                          SIG=_sig), ALT_BASE)


c_scanner = c_enabled


class _Records:
    __slots__ = ("records",)

    def __init__(self, records):
        self.records = records


class Reader:
    def __init__(self, path: str):
        self.path = path
        try:
            df = DebugFile(path)
        except SectionError as e:
            raise UnitError(path, e.section or "ELF", e.offset, str(e)) from None
        if not df.little:
            raise UnitError(path, "ELF", 0, "big-endian DWARF is not supported")
        if "info" not in df.sections:
            raise UnitError(path, ".debug_info", 0, "no DWARF debug information")
        alt = None
        if df.altlink:
            altpath = find_altfile(path, df.altlink)
            if altpath is None:
                raise UnitError(path, ".gnu_debugaltlink", 0,
                                f"dwz supplementary file {df.altlink!r} not found")
            try:
                alt = FileTables(DebugFile(altpath), None)
            except SectionError as e:
                raise UnitError(altpath, e.section or "ELF", e.offset, str(e)) from None
        self.main = FileTables(df, alt)
        self.func_symbols = df.func_symbols
        self.alt = alt
        self.sig: dict = {}
        self.main.sig = self.sig
        if alt is not None:
            alt.sig = self.sig
        self.decoders = _DECODERS
        self.abbrev_cache: dict = {}
        self.plan_cache: dict = {}
        # units: (section name, file tables, bytes, virtual base, is .debug_types)
        self.units = []
        spaces = [(".debug_info", self.main, self.main.info, 0, False),
                  (".debug_types", self.main, self.main.types, TYPES_BASE, True)]
        if alt is not None:
            spaces.append((".debug_info (dwz alt)", alt, alt.info, ALT_BASE, False))
        for sec, ft, data, space, is_types in spaces:
            if not data:
                continue
            try:
                for u in iter_unit_headers(data, sec, space, is_types):
                    u.file = ft
                    u.sc = ft.str.cache
                    u.index = len(self.units)
                    self.units.append(u)
                    if u.type_sig is not None:
                        self.sig[u.type_sig] = u.base + u.type_offset
            except FormError as e:
                raise UnitError(ft.path, sec, e.offset, str(e)) from None
        self.bases = [u.base for u in self.units]
        # units per abbreviation table: a table and its plans are dropped once read
        self._abbrev_users = collections.Counter((id(u.file), u.abbrev_offset)
                                                 for u in self.units)
        self._other_recs: dict = {}
        self._other_done: set = set()
        self._importers = None
        self._known = None           # the interner's known definitions (process())
        self.c = c_scanner()
        # jump over definitions already interned (scan.UnitScan.skey); False reads every
        # one (the check that skipping changes nothing: tests/test_dwarf_cscan.py)
        self.skip_seen = True

    def drop_sections(self) -> None:
        """Let the section bytes go (a read is over; what else it made may be freed later,
        model.free_later: the bytes are most of its memory and quick to free)."""
        for ft in (self.main, self.alt):
            if ft is not None:
                ft.info = ft.types = ft.abbrev = ft.line = ft.str_offsets = b""
                ft.str.data = ft.line_str.data = b""

    # ---- units --------------------------------------------------------------------
    def is_compile_unit(self, u) -> bool:
        return u.unit_type not in (DW_UT_type, DW_UT_split_type, DW_UT_partial) \
            and u.space != ALT_BASE

    def data_of(self, u):
        return u.file.types if u.space == TYPES_BASE else u.file.info

    def plans_for(self, u):
        ft = u.file
        akey = (id(ft), u.abbrev_offset)
        abbrevs = self.abbrev_cache.get(akey)
        if abbrevs is None:
            if not 0 <= u.abbrev_offset < len(ft.abbrev):
                raise FormError(f"abbreviation offset 0x{u.abbrev_offset:x} outside "
                                ".debug_abbrev", u.offset)
            try:
                abbrevs = parse_abbrev_table(ft.abbrev, u.abbrev_offset, len(ft.abbrev))
            except FormError as e:
                raise UnitError(ft.path, ".debug_abbrev", e.offset, str(e)) from None
            self.abbrev_cache[akey] = abbrevs
        pkey = (akey, u.addr_size, u.off_size, u.version)
        plans = self.plan_cache.get(pkey)
        if plans is None:
            plans = self.plan_cache[pkey] = make_plans(abbrevs, self.decoders, u)
        return plans

    def root(self, u):
        """Decode the unit DIE (sets u.name, u.comp_dir, u.stmt_list, u.str_offsets_base).
        Returns (section bytes, plans, root plan or None, offset after the root's attributes)."""
        d = self.data_of(u)
        plans = self.plans_for(u)
        o = u.die_offset
        code, o = uleb(d, o)
        if code == 0:
            return d, plans, None, o
        p = plans.build(code, u.die_offset)
        if p.tag == _TAG_PARTIAL_UNIT:       # DWARF 4 headers do not say it
            u.unit_type = DW_UT_partial
        ab_dec = self.decoders.get
        # DW_AT_str_offsets_base first: the unit's own name may be an strx form
        ab = self.abbrev_cache[(id(u.file), u.abbrev_offset)][code]
        _, sob = ab_dec(ab, ("str_offsets_base",), u.addr_size, u.off_size, u.version)(d, o, u)
        u.str_offsets_base = sob
        vals = ab_dec(ab, WANT_UNIT, u.addr_size, u.off_size, u.version)(d, o, u)
        u.name, u.comp_dir, u.stmt_list = vals[1], vals[2], vals[3]
        return d, plans, p, vals[0]

    def unit_name(self, u):
        """The unit's DW_AT_name, decoding only its unit DIE."""
        try:
            self.root(u)
        except (FormError, IndexError, struct.error, ValueError, KeyError, TypeError) as e:
            raise UnitError(u.file.path, u.sec, u.offset, f"bad unit DIE ({e})") from None
        return u.name

    def scan(self, u, known=None) -> UnitScan:
        """Scan one unit (raises UnitError on malformed input).  `known`: definitions
        interned so far, which the scan may jump over (scan.UnitScan)."""
        try:
            d, plans, p, o = self.root(u)
            files = lambda: self.files_of(u)           # noqa: E731
            if self.c:
                records: dict = {}
                if p is not None and p.children:
                    t = plans.ctable
                    if t is None:
                        t = plans.ctable = _cscan.Table(plans.abbrevs, u.addr_size,
                                                        u.off_size, u.version)
                    end = _cscan.scan(d, o, u.end, t, u, records, known, files, u.sc,
                                      u.file.str.data)
                    if end > u.end:
                        raise FormError("DIE tree runs past the end of its unit", u.end)
                return _Records(records)
            s = UnitScan(d, u, plans, known, files)
            if p is not None and p.children:
                end = s.top(o)
                if end > u.end:
                    raise FormError("DIE tree runs past the end of its unit", u.end)
            return s
        except FormError as e:
            raise UnitError(u.file.path, u.sec, e.offset if e.offset is not None else u.offset,
                            f"{e} (unit at 0x{u.offset:x})") from None
        except (IndexError, struct.error, ValueError, KeyError, TypeError, OverflowError,
                RecursionError) as e:
            raise UnitError(u.file.path, u.sec, u.offset,
                            f"malformed DIE tree in the unit at 0x{u.offset:x} "
                            f"({type(e).__name__}: {e})") from None

    def unit_at(self, off):
        i = bisect.bisect_right(self.bases, off) - 1
        if i >= 0:
            u = self.units[i]
            if off < u.space + u.end:
                return u
        return None

    def other_record(self, off):
        """Record of a DIE outside the unit being resolved (scanning its unit once)."""
        r = self._other_recs.get(off)
        if r is not None:
            return r
        u = self.unit_at(off)
        if u is None:
            raise FormError(f"reference to 0x{off:x}, outside every unit")
        if u.index in self._other_done:
            return None
        self._other_done.add(u.index)
        self._other_recs.update(self.scan(u, self._known).records)
        return self._other_recs.get(off)

    def prepare_origins(self):
        """Find the importers of dwz partial units now (before workers fork), if the
        file has any partial units (DWARF 4 marks them only in the unit DIE's tag)."""
        if self._importers is None and any(self._is_partial(u) for u in self.units):
            self._importers = self._find_importers()

    def _is_partial(self, u) -> bool:
        if u.unit_type == DW_UT_partial or u.version >= 5:
            return u.unit_type == DW_UT_partial
        # DWARF 2-4: the tag of the unit DIE's abbreviation, found without parsing the
        # whole table (the unit DIE's abbreviation is normally the table's first)
        try:
            d = self.data_of(u)
            code, _ = uleb(d, u.die_offset)
            ab = u.file.abbrev
            o = u.abbrev_offset
            while True:
                c, o = uleb(ab, o)
                if c == 0:
                    return False
                tag, o = uleb(ab, o)
                if c == code:
                    return tag == _TAG_PARTIAL_UNIT
                o += 1
                while True:
                    at, o = uleb(ab, o)
                    form, o = uleb(ab, o)
                    if form == 0x21:
                        _, o = uleb(ab, o)
                    if at == 0 and form == 0:
                        break
        except IndexError:
            return False                     # the unit's own scan reports it

    def origin_of(self, u):
        """A name for the types of unit `u`: its own, or for a dwz partial unit the name
        of the first compile unit that imports it (DW_TAG_imported_unit)."""
        if u.unit_type != DW_UT_partial:
            return u.name
        if self._importers is None:
            self._importers = self._find_importers()
        return self._importers.get(u.space + u.die_offset)

    def _find_importers(self) -> dict:
        """partial unit DIE offset -> name of the first compile unit that imports it,
        directly or through other partial units (DW_TAG_imported_unit children of units;
        the other children are jumped over)."""
        first_importer: dict = {}      # imported unit DIE offset -> importing unit DIE offset
        names: dict = {}               # unit DIE offset -> name (compile units)
        tag_import = TAG["imported_unit"]
        for u in self.units:
            try:
                d, plans, p, o = self.root(u)
                here = u.space + u.die_offset
                if u.unit_type != DW_UT_partial and u.name:
                    names[here] = u.name
                walker = UnitScan(d, u, plans)
                while p is not None and p.children and o < u.end:
                    code, o = uleb(d, o)
                    if code == 0:
                        break
                    q = plans.build(code, o)
                    if q.tag != tag_import:
                        o = walker.skip(q, o)
                        continue
                    ab = self.abbrev_cache[(id(u.file), u.abbrev_offset)][code]
                    o, target = self.decoders.get(ab, WANT_IMPORT, u.addr_size, u.off_size,
                                                  u.version)(d, o, u)
                    if target is not None:
                        first_importer.setdefault(target, here)
            except (FormError, IndexError, struct.error, ValueError, KeyError, TypeError):
                continue                     # the unit's own scan reports it properly
        out = {}
        for target in first_importer:
            at, hops = target, 0
            while at not in names and at in first_importer and hops < 64:
                at = first_importer[at]
                hops += 1
            if at in names:
                out[target] = names[at]
        return out

    def files_at(self, off):
        """decl_file table of the unit holding virtual DIE offset `off`."""
        u = self.unit_at(off)
        return self.files_of(u) if u is not None else []

    def files_of(self, u):
        if u.files is None:
            u.files = []
            if u.stmt_list is not None and u.stmt_list.__class__ is int and u.file.line:
                line_str, strs = u.file.line_str.get, u.file.str.get
                strings = (lambda which, off: line_str(off) if which == "line" else strs(off))
                try:
                    u.files = line_file_names(u.file.line, u.stmt_list, u.comp_dir, strings)
                except (FormError, IndexError, struct.error, ValueError) as e:
                    raise UnitError(u.file.path, ".debug_line", u.stmt_list,
                                    f"bad line-table header ({e})") from None
        return u.files

    # ---- the per-worker job -------------------------------------------------------
    def process(self, unit_indexes, table: KeyTable = None, tick=None, known=None,
                used=None):
        """Scan and resolve the given units; returns the UnitInterner (keys in its table).
        `known`, `used`: see api.read_dwarf_keys."""
        table = table or KeyTable()
        res = UnitInterner(table, self.other_record, self.func_symbols,
                           _cscan if self.c else None)
        if known is not None:
            res.known = known
        res.used = used
        known = res.known if self.skip_seen else None
        if known is not self._known:
            # the records of other units read so far may hold the ids of another table's
            # definitions the scan jumped over (a piece read after a share: parallel.py)
            self._other_recs, self._other_done = {}, set()
        self._known = known
        for n, i in enumerate(unit_indexes):
            u = self.units[i]
            s = self.scan(u, known)
            try:
                res.unit(u, s.records, self.files_at, self.origin_of(u))
            except FormError as e:
                raise UnitError(u.file.path, u.sec, e.offset or u.offset, str(e)) from None
            except (IndexError, struct.error, ValueError, KeyError, TypeError,
                    OverflowError) as e:
                raise UnitError(u.file.path, u.sec, u.offset,
                                f"malformed types in the unit at 0x{u.offset:x} "
                                f"({type(e).__name__}: {e})") from None
            self._done_with(u)
            if tick is not None:
                tick(n + 1)
        return res

    def _done_with(self, u) -> None:
        """Drop the abbreviation table and plans of `u` when no other unit uses them: freed
        as the walk goes (in each worker), not all at once after it (0.04 s of a vmlinux in
        one process).  A unit read again later (other_record) makes them anew."""
        akey = (id(u.file), u.abbrev_offset)
        left = self._abbrev_users[akey] - 1
        self._abbrev_users[akey] = left
        if left <= 0:
            self.abbrev_cache.pop(akey, None)
            self.plan_cache.pop((akey, u.addr_size, u.off_size, u.version), None)
