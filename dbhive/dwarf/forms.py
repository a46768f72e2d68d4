"""DWARF abbreviations and attribute forms: parsing abbreviation tables and compiling,
for each abbreviation, a small specialised decoder over the raw .debug_info bytes.

The hot path of the DWARF reader spends its time here.  An abbreviation fixes the form of
every attribute of the DIEs that use it, so for each distinct abbreviation *shape* (tag,
children flag, attribute/form list, unit address/offset size) we generate Python source
once: consecutive fixed-size attributes are read with a single `struct.unpack_from`, the
attributes nobody needs are jumped over, and only the wanted ones are converted (references
made absolute, strings looked up).  Decoders are cached by shape and shared by all units.

Form and tag numbers come from pyelftools' enum tables.
"""
from __future__ import annotations

import struct
from typing import Optional

from elftools.dwarf import enums as _E

from . import c_enabled
from ..leb128 import skip_leb128 as skip_leb, sleb128 as sleb, uleb128 as uleb  # noqa: F401

TAG = {k[7:]: v for k, v in _E.ENUM_DW_TAG.items() if k.startswith("DW_TAG_")}
AT = {k[6:]: v for k, v in _E.ENUM_DW_AT.items() if k.startswith("DW_AT_")}
FORM = {k[8:]: v for k, v in _E.ENUM_DW_FORM.items() if k.startswith("DW_FORM_")}
F = FORM

# virtual offset spaces: a reference is an int; units of the supplementary (dwz alt) file and
# of .debug_types live above these bases so one dict can hold DIEs of every section.
TYPES_BASE = 1 << 40
ALT_BASE = 1 << 41


class FormError(Exception):
    """A malformed byte sequence; the caller turns it into a DwarfError with context."""

    def __init__(self, msg: str, offset: Optional[int] = None):
        super().__init__(msg)
        self.offset = offset


# ---------------------------------------------------------------------------
# abbreviation tables

if c_enabled():                          # the C loop, the same result as the one below
    from ._cscan import parse_abbrevs as _c_parse_abbrevs
else:
    _c_parse_abbrevs = None

class Abbrev:
    __slots__ = ("code", "tag", "children", "specs", "shape")

    def __init__(self, code, tag, children, specs):
        self.code = code
        self.tag = tag
        self.children = children
        self.specs = specs          # tuple of (attr, form, implicit_const or None)


def parse_abbrev_table(d, o: int, end: int) -> dict:
    """{code: Abbrev} of the table starting at `o` in .debug_abbrev bytes `d`."""
    if _c_parse_abbrevs is not None:
        entries = _c_parse_abbrevs(d, o, end)
        if entries is not None:          # None: malformed, the loop below says why
            return {e[0]: Abbrev(*e) for e in entries}
    table = {}
    try:
        while True:
            code, o = uleb(d, o)
            if code == 0:
                return table
            tag, o = uleb(d, o)
            children = d[o]
            o += 1
            specs = []
            while True:
                at, o = uleb(d, o)
                form, o = uleb(d, o)
                if at == 0 and form == 0:
                    break
                if form == 0x21:            # implicit_const: value lives in the table
                    ic, o = sleb(d, o)
                    specs.append((at, form, ic))
                else:
                    specs.append((at, form, None))
            table[code] = Abbrev(code, tag, bool(children), tuple(specs))
            if o > end:
                raise FormError("abbreviation table runs past the end of .debug_abbrev", o)
    except IndexError:
        raise FormError("truncated abbreviation table", o) from None


# ---------------------------------------------------------------------------
# what each kind of DIE needs decoded (attribute names -> tuple position)

WANT_TYPE = ("name", "byte_size", "type", "declaration", "encoding", "sibling",
             "signature", "GNU_vector")
# structs, unions, enums: also where they are defined (a definition seen before is skipped)
WANT_AGG = WANT_TYPE + ("decl_file", "decl_line")
WANT_MEMBER = ("name", "type", "data_member_location", "data_bit_offset", "bit_offset",
               "bit_size", "byte_size")
WANT_ENUMERATOR = ("name", "const_value")
WANT_SUBRANGE = ("upper_bound", "count", "lower_bound")
WANT_PARAM = ("name", "type", "abstract_origin")
WANT_SUBPROGRAM = ("name", "type", "external", "declaration", "decl_file", "decl_line",
                   "low_pc", "ranges", "inline", "abstract_origin", "specification",
                   "sibling", "entry_pc")
WANT_UNIT = ("name", "comp_dir", "stmt_list", "str_offsets_base", "language", "producer")
WANT_IMPORT = ("import",)
WANT_SIBLING = ("sibling",)

# forms by size class
_FIXED = {F["addr"]: None, F["data1"]: 1, F["ref1"]: 1, F["flag"]: 1, F["strx1"]: 1,
          F["addrx1"]: 1, F["data2"]: 2, F["ref2"]: 2, F["strx2"]: 2, F["addrx2"]: 2,
          F["strx3"]: 3, F["addrx3"]: 3, F["data4"]: 4, F["ref4"]: 4, F["strx4"]: 4,
          F["addrx4"]: 4, F["ref_sup4"]: 4, F["data8"]: 8, F["ref8"]: 8, F["ref_sig8"]: 8,
          F["ref_sup8"]: 8, F["data16"]: 16, F["flag_present"]: 0, F["implicit_const"]: 0,
          F["strp"]: "off", F["line_strp"]: "off", F["sec_offset"]: "off",
          F["strp_sup"]: "off", F["GNU_ref_alt"]: "off", F["GNU_strp_alt"]: "off",
          F["ref_addr"]: "refaddr"}
_UNPACK = {1: "B", 2: "H", 4: "I", 8: "Q"}
_LEB_FORMS = {F["udata"], F["ref_udata"], F["sdata"], F["strx"], F["addrx"], F["loclistx"],
              F["rnglistx"], F["GNU_addr_index"], F["GNU_str_index"]}
_STR_FORMS = {F["string"], F["strp"], F["line_strp"], F["strx"], F["strx1"], F["strx2"],
              F["strx3"], F["strx4"], F["GNU_strp_alt"], F["strp_sup"], F["GNU_str_index"]}
_REF_LOCAL = {F["ref1"], F["ref2"], F["ref4"], F["ref8"], F["ref_udata"]}
_STRING_ATTRS = {"name", "comp_dir", "producer"}
_REF_ATTRS = {"type", "sibling", "abstract_origin", "specification", "import", "signature"}
_LOC_ATTRS = {"data_member_location"}
_AT_NAME = {v: k for k, v in AT.items()}


_REF_FORMS = _REF_LOCAL | {F["ref_addr"], F["ref_sig8"], F["GNU_ref_alt"], F["ref_sup4"],
                           F["ref_sup8"]}
_CONST_FORMS = {F["data1"], F["data2"], F["data4"], F["data8"], F["data16"], F["sdata"],
                F["udata"], F["implicit_const"], F["flag"], F["flag_present"]}
_BLOCK_FORMS = {F["block1"], F["block2"], F["block4"], F["block"], F["exprloc"]}
_PRESENCE_ATTRS = {AT[a] for a in ("low_pc", "ranges", "entry_pc", "inline", "high_pc")}


def _form_ok(at: int, form: int) -> bool:
    """Whether a value of this form means something for this attribute (else the
    attribute is skipped as if absent: malformed or exotic producers)."""
    name = _AT_NAME.get(at)
    if name in _STRING_ATTRS:
        return form in _STR_FORMS
    if name in _REF_ATTRS:
        return form in _REF_FORMS
    if name in _LOC_ATTRS:
        return form in _CONST_FORMS or form in _BLOCK_FORMS
    if at in _PRESENCE_ATTRS:
        return True
    return form in _CONST_FORMS or form == F["sec_offset"]


def fixed_size(form: int, addr_size: int, off_size: int, version: int):
    s = _FIXED.get(form, -1)
    if s == -1:
        return None
    if s is None:
        return addr_size
    if s == "off":
        return off_size
    if s == "refaddr":
        return addr_size if version <= 2 else off_size
    return s


class Decoders:
    """Compiled decoders, cached by abbreviation shape.  The generated code reaches a file's
    string tables through the unit it is given (`env` holds only file-independent
    helpers), so one instance serves every reader of a process (reader.py)."""

    def __init__(self, env: dict):
        self.env = dict(env)
        self.env.update(uleb=uleb, sleb=sleb, skip_leb=skip_leb, unpack_from=struct.unpack_from,
                        FormError=FormError, expr_offset=expr_offset)
        self.cache: dict = {}
        self.structs: dict = {}
        self._want_ats: dict = {}
        self.by_specs: dict = {}
        self.plans: dict = {}        # scan.Plan by abbreviation shape

    def get(self, ab: Abbrev, want: tuple, addr_size: int, off_size: int, version: int,
            finish=None):
        """Decoder `dec(d, o, cu) -> (next offset, *values of want)`; with `finish`, a
        record builder `dec(d, o, cu, out) -> next offset` that extends list `out`
        with what `finish` makes of the values (see FINISH_*)."""
        raw_key = (ab.specs, want, addr_size, off_size, version, finish)
        fn = self.by_specs.get(raw_key)
        if fn is None:
            specs = self._normalize(ab.specs, want, addr_size, off_size, version)
            key = (specs, want, addr_size, off_size, version, finish)
            fn = self.cache.get(key)
            if fn is None:
                fn = self.cache[key] = self._compile(specs, want, addr_size, off_size,
                                                     version, finish)
            self.by_specs[raw_key] = fn
        return fn

    def _normalize(self, specs, want, addr_size, off_size, version) -> tuple:
        """The specs as far as a decoder for `want` cares: unwanted fixed-size attributes
        merged into (0, -size, None), unwanted variable-size ones as (0, form, None).  Many
        abbreviations then share one compiled decoder."""
        wanted = self._want_ats.get(want)
        if wanted is None:
            wanted = self._want_ats[want] = frozenset(AT[a] for a in want if a in AT)
        norm = []
        skip = 0
        for at, form, ic in specs:
            if at in wanted and _form_ok(at, form):
                if skip:
                    norm.append((0, -skip, None))
                    skip = 0
                norm.append((at, form, ic))
                continue
            size = fixed_size(form, addr_size, off_size, version)
            if size is not None:
                skip += size
                continue
            if skip:
                norm.append((0, -skip, None))
                skip = 0
            norm.append((0, form, None))
        if skip:
            norm.append((0, -skip, None))
        return tuple(norm)

    def skip_size(self, ab: Abbrev, addr_size: int, off_size: int, version: int):
        """Total size of the attributes when every form is fixed-size, else None."""
        total = 0
        for _at, form, _ic in ab.specs:
            s = fixed_size(form, addr_size, off_size, version)
            if s is None:
                return None
            total += s
        return total

    # ---- code generation ----------------------------------------------------
    def _struct_name(self, fmt: str) -> str:
        name = self.structs.get(fmt)
        if name is None:
            name = self.structs[fmt] = f"_S{len(self.structs)}"
            self.env[name] = struct.Struct("<" + fmt).unpack_from
        return name

    def _compile(self, specs, want, addr_size, off_size, version, finish=None):
        pos = {AT[a]: i for i, a in enumerate(want) if a in AT}
        names = {AT[a]: a for a in want if a in AT}
        store = getattr(finish, "store", False)
        out = ["def dec(d, o, cu, out, off):" if store else
               "def dec(d, o, cu, out):" if finish else "def dec(d, o, cu):"]
        vals = ["None"] * len(want)
        run_fmt = []        # pending fixed-size run: struct format pieces
        run_vars = []       # (var, attr name, form) of wanted values in the run
        run_len = [0]
        tmp = [0]

        def flush():
            if not run_fmt:
                return
            if run_vars:
                sname = self._struct_name("".join(run_fmt))
                lhs = ", ".join(v for v, _, _ in run_vars)
                out.append(f"    {lhs}{',' if len(run_vars) == 1 else ''} = {sname}(d, o)")
                for v, aname, form in run_vars:
                    out.extend(self._convert(v, aname, form, version))
            out.append(f"    o += {run_len[0]}")
            run_fmt.clear()
            run_vars.clear()
            run_len[0] = 0

        for at, form, ic in specs:
            wanted = at in pos
            var = None
            if wanted:
                tmp[0] += 1
                var = f"v{tmp[0]}"
                vals[pos[at]] = var
            if form < 0:                    # merged unwanted fixed-size attributes
                run_fmt.append(f"{-form}x")
                run_len[0] += -form
                continue
            if form == F["indirect"]:
                flush()
                out.append("    raise FormError('DW_FORM_indirect is not supported', o)")
                continue
            if form == F["implicit_const"]:
                if wanted:
                    out.append(f"    {var} = {ic!r}")
                    out.extend(self._convert(var, names[at], F["data8"], version, fixed=True))
                continue
            if form == F["flag_present"]:
                if wanted:
                    out.append(f"    {var} = True")
                continue
            size = fixed_size(form, addr_size, off_size, version)
            if size is not None:
                if wanted and size in _UNPACK:
                    run_fmt.append(_UNPACK[size])
                    run_vars.append((var, names[at], form))
                elif wanted and size in (3, 16):
                    run_fmt.append(f"{size}s")
                    run_vars.append((var, names[at], form))
                else:
                    run_fmt.append(f"{size}x" if size else "")
                run_len[0] += size
                continue
            flush()
            if form in _LEB_FORMS:
                if wanted:
                    fn = "sleb" if form == F["sdata"] else "uleb"
                    out.append(f"    {var}, o = {fn}(d, o)")
                    out.extend(self._convert(var, names[at], form, version))
                else:
                    out.append("    o = skip_leb(d, o)")
            elif form == F["string"]:
                out.append("    e = d.index(0, o)")
                if wanted:
                    out.append(f"    {var} = d[o:e].decode('utf-8', 'replace')")
                out.append("    o = e + 1")
            elif form in (F["block1"], F["block2"], F["block4"], F["block"], F["exprloc"]):
                if form == F["block1"]:
                    out.append("    n = d[o]; o += 1")
                elif form == F["block2"]:
                    out.append("    n, = unpack_from('<H', d, o); o += 2")
                elif form == F["block4"]:
                    out.append("    n, = unpack_from('<I', d, o); o += 4")
                else:
                    out.append("    n, o = uleb(d, o)")
                if wanted:
                    if names[at] in _LOC_ATTRS:
                        out.append(f"    {var} = expr_offset(d, o, o + n)")
                    else:
                        out.append(f"    {var} = bytes(d[o:o + n])")
                out.append("    o += n")
            else:
                out.append(f"    raise FormError('unknown attribute form 0x{form:x}', o)")
        flush()
        if finish is not None:
            present = {a: (v if v != "None" else None) for a, v in zip(want, vals)}
            if store:
                out.append(f"    out[off] = {finish(present)}")
            else:
                out.append(f"    out += {finish(present)}")
            out.append("    return o")
        else:
            out.append(f"    return o, {', '.join(vals)}" if vals else "    return o,")
        src = "\n".join(out)
        ns = self.env
        exec(compile(src, f"<dwarf decoder {len(self.cache)}>", "exec"), ns)
        return ns.pop("dec")

    def _convert(self, var, aname, form, version, fixed=False):
        """Lines turning the raw value `var` of attribute `aname` into its meaning."""
        if aname in _STRING_ATTRS:
            if form == F["strp"]:
                return [f"    t = cu.sc.get({var})",
                        f"    {var} = t if t is not None else STRP(cu, {var})"]
            if form == F["line_strp"]:
                return [f"    {var} = LINE_STRP(cu, {var})"]
            if form in (F["strx"], F["strx1"], F["strx2"], F["strx4"], F["GNU_str_index"]):
                return [f"    {var} = STRX(cu, {var})"]
            if form == F["strx3"]:
                return [f"    {var} = STRX(cu, int.from_bytes({var}, 'little'))"]
            if form in (F["GNU_strp_alt"], F["strp_sup"]):
                return [f"    {var} = ALT_STRP(cu, {var})"]
            if form == F["string"]:
                return []
            return [f"    {var} = None"]
        if aname in _REF_ATTRS:
            if form in _REF_LOCAL:
                return [f"    {var} += cu.base"]
            if form == F["ref_addr"]:
                return [f"    {var} += cu.space"]
            if form == F["ref_sig8"]:
                return [f"    {var} = SIG(cu, {var})"]
            if form in (F["GNU_ref_alt"], F["ref_sup4"], F["ref_sup8"]):
                return [f"    {var} += ALT_BASE"]
            return [f"    {var} = None"]
        if form in (F["data16"], F["strx3"], F["addrx3"]):
            return [f"    {var} = int.from_bytes({var}, 'little')"]
        if form in _STR_FORMS:
            return [f"    {var} = None"]
        return []


# ---------------------------------------------------------------------------
# record builders: given {attribute: variable or None}, the tuple expression appended to the
# parent's flat list

def FINISH_MEMBER(v) -> str:
    """(name, type, bit offset from the aggregate start, bit size).  The DWARF 2-4
    big-endian-style DW_AT_bit_offset without DW_AT_byte_size needs the member type's
    size: the bit offset is then left as a tuple ('msb', base bits, bit_offset) for the
    resolver to finish."""
    name = v["name"] or "None"
    typ = v["type"] or "None"
    bs = v["bit_size"]
    loc = v["data_member_location"]
    base = f"({loc} * 8 if {loc}.__class__ is int else 0)" if loc else "0"
    if v["data_bit_offset"]:
        bit = v["data_bit_offset"]
    elif v["bit_offset"] and bs:
        if v["byte_size"]:
            bit = f"{base} + {v['byte_size']} * 8 - {v['bit_offset']} - {bs}"
        else:
            bit = f"('msb', {base}, {v['bit_offset']})"
    else:
        bit = base
    return f"({name}, {typ}, {bit}, {bs or 0})"


_STORE_FINISHERS: dict = {}


def finish_store(kind: int, extra=None):
    """A record builder for a childless simple type DIE: `dec(d, o, cu, records, off)`
    stores the record tuple `(kind, [extra,] ...)` at `records[off]`.  `kind` is a
    scan.py R_* number; the fields follow scan.py's record layouts."""
    key = (kind, extra)
    fn = _STORE_FINISHERS.get(key)
    if fn is None:
        def fn(v):
            name, typ = v["name"] or "None", v["type"] or "None"
            if extra == "base":
                return f"({kind}, {name}, {v['byte_size'] or 'None'}, {v['encoding'] or 'None'})"
            if extra == "typedef":
                return f"({kind}, {name}, {typ})"
            if extra == "ptr":
                return f"({kind}, {typ}, {v['byte_size'] or 'None'})"
            return f"({kind}, {extra!r}, {typ})"          # qualifier: its model kind
        fn.store = True
        _STORE_FINISHERS[key] = fn
    return fn


def FINISH_ENUMERATOR(v) -> str:
    val = v["const_value"]
    val = f"({val} if {val}.__class__ is int else 0)" if val else "0"
    return f"({v['name'] or 'None'}, {val})"


def FINISH_PARAM(v) -> str:
    return f"({v['name'] or 'None'}, {v['type'] or 'None'}, {v['abstract_origin'] or 'None'})"


def expr_offset(d, o: int, end: int):
    """Value of a DW_AT_data_member_location expression (DW_OP_plus_uconst N and the
    constant pushes compilers emit); None if it is not a constant offset."""
    stack = [0]
    try:
        while o < end:
            op = d[o]
            o += 1
            if op == 0x23:                      # DW_OP_plus_uconst
                v, o = uleb(d, o)
                stack[-1] += v
            elif op == 0x10:                    # DW_OP_constu
                v, o = uleb(d, o)
                stack.append(v)
            elif op == 0x11:                    # DW_OP_consts
                v, o = sleb(d, o)
                stack.append(v)
            elif 0x30 <= op <= 0x4f:            # DW_OP_lit0..31
                stack.append(op - 0x30)
            elif op in (0x08, 0x0a, 0x0c, 0x0e):  # DW_OP_const1u/2u/4u/8u
                n = {0x08: 1, 0x0a: 2, 0x0c: 4, 0x0e: 8}[op]
                stack.append(int.from_bytes(d[o:o + n], "little"))
                o += n
            elif op == 0x22:                    # DW_OP_plus
                b = stack.pop()
                stack[-1] += b
            else:
                return None
        return stack[-1]
    except (IndexError, ValueError):
        return None
