"""surftrace expressions -> kprobe_events lines.

    p wake_up_new_task comm=%0->comm
    r do_filp_open pos=$retval->f_pos
    p do_filp_open+121 pos=X!(struct file*)%ax->f_pos
    p __netif_receive_skb_core proto=@(struct iphdr *)l3%0->protocol f:proto==6

The syntax and the produced text follow the surftrace 0.7.16 client (`surftrace -S`), so a
line translated here equals the client's on the same DB.  Beyond the client (unless
`compat=True`): bitfields are fetched as `b<width>@<bit>/<unit bits>` instead of their whole
storage unit, `$retval` and `@symbol` (with a cast) keep their member chains, and typedef'd
structs (`atomic_t`) can be walked with `.`.

Offsets come from the resolver's own tables (kt_*), not from the surftrace tables.
"""
from __future__ import annotations

import re
import socket
import struct as _struct
from dataclasses import dataclass
from typing import Optional

from .api import Resolver, TypeRef, bitfield_unit
from dbhive.errors import AbsentMember, BadPath, DbhiveError, NoSuchType, NotAPointer

from .errors import CorruptDB, ExprError, ResolverError
from .kernel import ARRAY, COMPOSITE, MAX_CHAIN, PTR, QUALIFIERS

ARCH_REGS = {
    "x86_64": ("di", "si", "dx", "cx", "r8", "r9", "ax", "bx", "sp", "bp", "r10", "r11",
               "r12", "r13", "r14", "r15"),
    "x86": ("di", "si", "dx", "cx"),
    "aarch64": tuple(f"x{i}" for i in range(32)),
}
RESERVED_VARS = ("common_pid", "common_preempt_count", "common_flags", "common_type")

# What a lookup answers when this kernel has no such type or member: the translator turns
# these into the expression's error.  Whatever else a lookup raises (a damaged DB: CorruptDB,
# exit code 7) is not the expression's fault and keeps its own error (translate()).
_NOT_IN_KERNEL = (BadPath, NoSuchType, AbsentMember, NotAPointer)


def named_arg(e: str, seen: list) -> tuple:
    """`var=expr` of a uprobe line -> (var, expr): a new name of letters, digits and '_' that is
    not one of the event's own fields; `var` is added to `seen`."""
    if "=" not in e:
        raise ExprError(f"{e!r}: expected var=expression")
    var, expr = e.split("=", 1)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
        raise ExprError(f"{var!r} cannot name an argument (letters, digits, '_')")
    if var in RESERVED_VARS:
        raise ExprError(f"{var} is a reserved word, it cannot name an argument")
    if var in seen:
        raise ExprError(f"var {var} is already used in a previous expression")
    seen.append(var)
    return var, expr
NET_STRUCTS = ("struct ethhdr", "struct iphdr", "struct icmphdr", "struct tcphdr",
               "struct udphdr")
# pseudo members after a network header: name -> (element size, element type)
NET_DATAS = {"cdata": (1, "unsigned char"), "sdata": (2, "unsigned short"),
             "ldata": (4, "unsigned int"), "qdata": (8, "unsigned long"),
             "Sdata": (1, "char")}
NET_DATA_BYTES = 1536
FETCH_BITS = {1: 8, 2: 16, 4: 32, 8: 64}
HEAD_FLAGS = ("ip", "b16", "b32", "b64", "B16", "B32", "B64")

_VAR = r"[a-zA-z][a-zA-z0-9_]*"          # the client's character class, '[A-z]' quirk included
_RE_COMM = re.compile(_VAR + r"=\$comm")
_RE_PROBE = re.compile(_VAR + r"=[SUX]?(@\(struct .*\*\)(l[234]|)|\!\(.*\)|)(%|@|\$stack)")
_RE_RET = re.compile(_VAR + r"=[SUX]?(@\(struct .*\*\)(l[234]|)|\!\(.*\)|)(\$retval|\$stack|@|%)")
_RE_LAYER = re.compile(r"l[234]")
_RE_PAREN = re.compile(r"(?<=\().+?(?=\))")
_RE_INDEX = re.compile(r"\[\s*(\d+)\s*\]")
MAX_EXPR_LEN = 4096


@dataclass
class Probe:
    """One translated probe: `line` is what would be written to kprobe_events."""
    type: str
    line: str
    filter: str = ""
    source: str = ""

    def surftrace_dict(self) -> dict:
        """What `surftrace -S` prints for this probe."""
        return {"type": self.type, "fxpr": self.line, "filter": self.filter}

    def as_dict(self) -> dict:
        return {"type": self.type, "line": self.line, "filter": self.filter,
                "expr": self.source}


# ---------------------------------------------------------------------------
# splitting (the client's rules: spaces separate words outside parentheses)

def split_words(text: str) -> list:
    words, cur, depth = [], "", 0
    for c in text:
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
            if depth < 0:
                raise ExprError(f"unbalanced ')' in {text!r}")
        elif depth == 0 and c == " ":
            if cur:
                words.append(cur)
            cur = ""
            continue
        cur += c
    if cur:
        words.append(cur)
    return words


def split_probe(line: str) -> dict:
    ws = split_words(line)
    if len(ws) < 2:
        raise ExprError(f"{line!r}: expected '<p|r|e> <symbol> [var=expr ...] [f:filter]'")
    if ws[0] not in ("p", "r", "e"):
        if ws[0] in ("P", "R"):
            raise ExprError(f"{line!r}: uprobes (P/R) are translated only on the machine that "
                            f"has the binary (resolver expr), not here")
        raise ExprError(f"{line!r}: probe type must be p, r, e, P or R, not {ws[0]!r}")
    res = {"type": ws[0], "symbol": ws[1], "filter": "", "args": ws[2:]}
    if len(ws) >= 3 and ws[-1].startswith("f:"):
        res["filter"] = ws[-1][2:]
        res["args"] = ws[2:-1]
    return res


# ---------------------------------------------------------------------------
# filters (`f:ip_src==1.2.3.4&&b16_port==80`), translated like the client does

def _head_value(head: str, value: str) -> str:
    h = head.split("_", 1)[0]
    if h not in HEAD_FLAGS:
        return value
    try:
        if h == "ip":
            return "0x%x" % _struct.unpack("I", socket.inet_aton(value))[0]
        kind, bits = h[0], h[1:]
        fmt = {"16": "H", "32": "I", "64": "Q"}[bits]
        v = int(value, 16) if (kind == "B" or value[:2] in ("0x", "0X")) else int(value)
        swapped = _struct.unpack(fmt, _struct.pack(">" + fmt, v))[0]
    except (OSError, ValueError, KeyError, _struct.error) as e:
        raise ExprError(f"bad value {value!r} for {head}: {e}") from None
    return ("%x" if kind == "B" else "%d") % swapped


def translate_filter(text: str) -> str:
    ops = ("==", "!=", "~", ">=", "<=", ">", "<")

    def one(s):
        for op in ops:
            if op in s:
                parts = s.split(op)
                if len(parts) != 2:
                    raise ExprError(f"bad filter term {s!r}")
                k, v = parts
                if "_" in k:
                    v = _head_value(k, v)
                return f"{k}{op}{v}"
        raise ExprError(f"bad filter term {s!r}: no comparison")

    out, beg = "", 0
    for i, c in enumerate(text):
        if c in "()|&":
            if i and beg != i:
                out += one(text[beg:i])
            beg = i + 1
            out += c
    if beg != len(text):
        out += one(text[beg:])
    return out


# ---------------------------------------------------------------------------
# the value being walked

@dataclass
class _Cur:
    """What the expression denotes so far."""
    db: object                 # KernelDB, or None for a type known only by name
    tid: Optional[int]         # type id in db (for a cast: the base type)
    ptrs: int = 0              # extra pointer levels on top of tid (casts)
    text: str = ""             # the type string the client would hold
    size: Optional[int] = None  # member bytes (as the client's `members.bytes`)
    array: bool = False        # the member was an array (the client's '[' in name)
    elem: Optional[int] = None  # array element type id
    bits: Optional[tuple] = None  # (unit offset, bit, width, unit bytes) of a bitfield
    named: bool = False        # came from a member (the client has a member cell)
    elem_size: Optional[int] = None  # network pseudo-arrays (cdata...): element bytes
    array_walk: bool = False   # a fully indexed array element (may be walked on)


class _Translator:
    def __init__(self, r: Resolver, arch: str, compat: bool):
        if arch not in ARCH_REGS:
            raise ExprError(f"unsupported arch {arch!r} (x86_64, x86, aarch64)")
        self.r = r
        self.arch = arch
        self.compat = compat
        self.where = "in this kernel"      # what messages name: a kernel, or a binary

    # ---- types -------------------------------------------------------------
    def _peel(self, db, tid):
        """Strip top-level qualifiers and array dimensions: (element id, is array)."""
        arr = False
        t = db.type(tid)
        for _ in range(MAX_CHAIN):
            if t.kind not in QUALIFIERS and t.kind != ARRAY:
                return t.id, arr
            arr = arr or t.kind == ARRAY
            t = db.type(t.ref)
        raise CorruptDB(f"type id {tid}: qualifier/array chain loops (damaged DB)")

    def _parse_cast(self, text: str) -> _Cur:
        raw = text
        t = re.sub(r"\b(const|volatile)\b", " ", text).strip()
        nptr = len(t) - len(t.rstrip("*"))
        t = t.rstrip("*").strip()
        nptr += t.count("*")
        t = t.replace("*", "").strip()
        t = re.sub(r"\s+", " ", t)
        spelled = t + (" " + "*" * nptr if nptr else "")
        if not re.fullmatch(r"(?:(?:struct|union|enum) )?[A-Za-z_][A-Za-z0-9_ ]*", t):
            raise ExprError(f"bad type in cast: {raw!r}")
        if t.startswith(("struct ", "union ")):
            try:
                ref = self.r.find_type(t)
            except _NOT_IN_KERNEL:
                if nptr:
                    return _Cur(None, None, nptr, spelled)
                raise ExprError(f"{t}: not a struct/union {self.where}") from None
            return _Cur(ref.db, ref.id, nptr, spelled)
        return _Cur(None, None, nptr, spelled) if nptr else _Cur(None, None, 0, spelled)

    def _from_tid(self, db, tid) -> _Cur:
        base, _arr = self._peel(db, tid)
        return _Cur(db, tid, 0, db.spelling(base))

    def _is_ptr(self, c: _Cur) -> bool:
        if c.ptrs:
            return True
        if c.db is None or c.tid is None or (c.array and not c.array_walk):
            return False
        return c.db.type(c.db.strip(c.tid)).kind == PTR

    def _pointee(self, c: _Cur, what: str) -> TypeRef:
        """The struct/union a pointer value points to (for `->`)."""
        if c.ptrs:
            if c.ptrs > 1:
                raise ExprError(f"{what} is a pointer to a pointer ({c.text}): cannot use '->'")
            if c.db is None:
                name = c.text.rstrip("* ").strip()
                try:
                    ref = self.r.find_type(name)
                except _NOT_IN_KERNEL:
                    raise ExprError(f"{name} is not a valid struct {self.where}") from None
                return ref
            return TypeRef(c.db, c.db.complete(c.db.strip(c.tid)))
        if c.db is None or not self._is_ptr(c):
            raise ExprError(f"{what} is {c.text or 'not a pointer'}, not a pointer: "
                            f"use '.' to get a member")
        db = c.db
        pt = db.type(db.strip(c.tid))
        target = db.complete(db.strip(pt.ref))
        tt = db.type(target)
        if tt.kind not in COMPOSITE or tt.size is None:
            if tt.name and tt.kind in (COMPOSITE + ("fwd",)):
                return self.r.find_type(tt.name, tt.kind if tt.kind in COMPOSITE
                                        else (tt.encoding or "struct"))
            raise ExprError(f"{what} points to {db.spelling(pt.ref)}, not to a struct or union")
        return TypeRef(db, target)

    def _composite(self, c: _Cur, what: str) -> TypeRef:
        """The struct/union a non-pointer value is (for `.`)."""
        if self._is_ptr(c):
            raise ExprError(f"{what} is a pointer ({c.text}): use '->' to get a member")
        if c.db is None or (c.array and not c.array_walk):
            raise ExprError(f"{what} ({c.text}) is not a struct or union")
        tid = c.db.complete(c.db.strip(c.tid))
        if c.db.type(tid).kind not in COMPOSITE:
            raise ExprError(f"{what} ({c.text}) is not a struct or union")
        return TypeRef(c.db, tid)

    # ---- members -------------------------------------------------------------
    def _member(self, ref: TypeRef, step: str, what: str) -> tuple:
        """(byte offset, _Cur) of member `step` (`name`, `name[3]`) of composite `ref`.
        For a bitfield the offset is its storage unit's (what the fetch reads)."""
        db = ref.db
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\s*\d+\s*\])*)", step)
        if not m:
            raise ExprError(f"bad member {step!r} in {what}")
        name, idx = m.group(1), [int(x) for x in _RE_INDEX.findall(m.group(2) or "")]
        found = db.find_member(ref.id, name)
        if found is None:
            t = db.type(ref.id)
            raise ExprError(f"{name} is not a member in {t.kind} {t.name or '{...}'} "
                            f"(absent {self.where})")
        bits = found.bit_offset
        elem, is_arr = self._peel(db, found.type)
        cur = _Cur(db, found.type, 0, db.spelling(elem), db.sizeof(found.type) or 0,
                   is_arr, elem if is_arr else None, named=True)
        if found.bit_size:
            unit = db.sizeof(elem) or 4
            off, bit = bitfield_unit(bits, found.bit_size, unit)
            cur.bits = (off, bit, found.bit_size, unit)
            cur.size = unit
            if idx:
                raise ExprError(f"{name} is a bitfield: it cannot be indexed")
            return off, cur
        if is_arr:
            char_like = cur.text == "char" or " char" in cur.text
            if not idx and not char_like:
                raise ExprError(f"member {name} is an array, add an index: {name}[0]")
            tid = found.type
            for i in idx:
                at = db.type(db.strip(tid))
                if at.kind != ARRAY:
                    raise ExprError(f"{name} has fewer dimensions than {step}")
                if at.nelems and i >= at.nelems:
                    raise ExprError(f"{name} max index is {at.nelems}, you set {i}, overflow")
                bits += i * (db.sizeof(at.ref) or 0) * 8
                tid = at.ref
            if idx and len(idx) == self._dims(db, found.type) and not char_like:
                cur.tid = tid           # a whole element: walk on from it (`arr[2].x`)
                cur.array_walk = True
        elif idx:
            raise ExprError(f"{name} is not an array ({cur.text}): cannot index it")
        return bits // 8, cur

    def _dims(self, db, tid) -> int:
        n = 0
        t = db.type(db.strip_cv(tid))
        while t.kind == ARRAY:
            n += 1
            if n > MAX_CHAIN:
                raise CorruptDB(f"type id {tid}: array chain loops (damaged DB)")
            t = db.type(db.strip_cv(t.ref))
        return n

    # ---- one argument ----------------------------------------------------------
    def arg(self, e: str, kind: str, in_body: bool, func) -> str:
        """Translate `var=expr` into the fetch-arg text."""
        if _RE_COMM.match(e):
            return "$comm"
        if not (_RE_PROBE if kind == "p" else _RE_RET).match(e):
            raise ExprError(f"error in expr {e}: expected var=[S|U|X][cast]%reg|$retval|@sym"
                            f"[->member...]")
        var, expr = e.split("=", 1)
        if var in RESERVED_VARS:
            raise ExprError(f"{var} is a reserved word, it cannot name an argument")
        fmt = "u"
        if expr[0] in "SUX":
            fmt = expr[0].lower()
            expr = expr[1:]
        tail = expr.rsplit("(", 1)[1] if "(" in expr else expr
        sym = None
        for k in ("%", "@", "$"):
            if k in tail:
                sym = k
                head, xpr = expr.rsplit(k, 1)
        if sym is None:
            raise ExprError(f"bad argument mode in {expr}")
        cut = len(xpr)
        for i, c in enumerate(xpr):
            if c == "." or xpr.startswith("->", i):
                cut = i
                break
        reg, chain = xpr[:cut], xpr[cut:]
        args = [p.type for p in func.params] if func is not None else []
        if sym == "%":
            regs = ARCH_REGS[self.arch]
            if reg.isdigit():
                argi = int(reg)
            elif reg in regs:
                argi = regs.index(reg)
            else:
                raise ExprError(f"{reg} is not a {self.arch} register")
            if argi >= len(regs):
                raise ExprError(f"register index {argi} overflows {self.arch}'s registers")
            reg_text = "%" + regs[argi]
            if not in_body and not head and kind == "p" and argi >= len(args):
                raise ExprError(f"argument %{argi} of {func.name}: it has only "
                                f"{len(args)} arguments")
        else:
            argi = 0
            reg_text = sym + reg
        # the starting type
        start: Optional[_Cur] = None
        skb = None
        if head:
            if head[0] == "@":
                cast = _RE_PAREN.findall(head)
                if not cast or cast[0].strip("* ") not in NET_STRUCTS:
                    raise ExprError(f"type {cast[0] if cast else head} is not a legal network "
                                    f"header (struct ethhdr/iphdr/icmphdr/tcphdr/udphdr *)")
                lm = _RE_LAYER.search(head)
                skb = (cast[0].strip("* ").strip(), int(lm.group(0)[1]) if lm else 3)
                start = self._parse_cast(cast[0])
            elif head[0] in "!(":
                cast = _RE_PAREN.findall(head)
                if not cast:
                    raise ExprError(f"bad cast in {expr}")
                start = self._parse_cast(cast[0])
            else:
                raise ExprError(f"bad prefix {head!r} in {expr}")
        elif sym == "%":
            if in_body:
                start = _Cur(None, None, 0, "u64")
            elif kind == "p":
                p = func.params[argi]
                start = self._from_tid(self._fdb, p.type_id)
            else:
                start = self._ret_cur(func)
        elif sym == "$" and reg == "retval" and not self.compat and chain:
            start = self._ret_cur(func)
        elif sym == "@" and chain and not self.compat:
            raise ExprError(f"{e}: @{reg} needs a cast to walk members, "
                            f"e.g. !(struct foo *)@{reg}->member")
        if start is None:
            return reg_text                       # $retval, $stackN, @sym: as given
        if not chain:
            return self._suffix(reg_text, start, fmt)
        return self._walk(reg_text, start, chain, fmt, skb, e)

    def _ret_cur(self, func) -> _Cur:
        if func.ret_id is None:
            return _Cur(None, None, 0, "void")
        return self._from_tid(self._fdb, func.ret_id)

    def _walk(self, text: str, cur: _Cur, chain: str, fmt: str, skb, e: str) -> str:
        # split into (sep, word) pairs; a word may carry a cast: `!(struct sock *)sk`
        pairs = []
        i = 0
        while i < len(chain):
            if chain.startswith("->", i):
                sep, i = "->", i + 2
            elif chain[i] == ".":
                sep, i = ".", i + 1
            elif chain[i] == "-":
                raise ExprError("bad pointer mode, should be '->'")
            else:
                raise ExprError(f"bad member chain {chain!r}")
            j = i
            depth = 0
            while j < len(chain):
                c = chain[j]
                if c == "(":
                    depth += 1
                elif c == ")":
                    depth -= 1
                elif depth == 0 and (c == "." or chain.startswith("->", j)):
                    break
                j += 1
            word = chain[i:j]
            if not word:
                raise ExprError(f"empty member name in {chain!r}")
            pairs.append((sep, word))
            i = j
        what = text
        group_off: Optional[int] = None      # offset being accumulated in the current hop
        for n, (sep, word) in enumerate(pairs):
            cast = None
            if word[0] in "!(@":
                found = _RE_PAREN.findall(word)
                if not found or ")" not in word:
                    raise ExprError(f"bad cast in {word!r}")
                cast = found[0]
                word = word.split(")", 1)[1]
            if cur.bits is not None:
                raise ExprError(f"{what} is a bitfield: it has no members")
            if sep == "->":
                if n == 0 and skb is not None:
                    text, group_off, cur = self._skb(text, skb, word, e)
                else:
                    ref = self._pointee(cur, what)
                    off, cur = self._member(ref, word, what)
                    if group_off is not None:
                        text = "+0x%x(%s)" % (group_off, text)
                    group_off = off
            else:
                if group_off is None:
                    raise ExprError("regs should start with '->' (the first step from a "
                                    "register is a pointer dereference)")
                ref = self._composite(cur, what)
                off, cur = self._member(ref, word, what)
                group_off += off
            what = f"{what}{sep}{word}"
            if cast is not None:
                cur = self._parse_cast(cast)
        if group_off is not None:
            text = "+0x%x(%s)" % (group_off, text)
        return self._suffix(text, cur, fmt)

    # ---- skb headers -------------------------------------------------------------
    def _skb_struct(self, name: str) -> TypeRef:
        try:
            return self.r.find_type(name)
        except _NOT_IN_KERNEL:
            raise ExprError(f"{name} is not in this kernel's DB") from None

    def _skb(self, text: str, skb, member: str, e: str) -> tuple:
        """`@(struct iphdr *)l3%0->protocol`: through sk_buff.data to a network header.
        Returns (text so far, pending offset, value)."""
        sname, layer = skb
        try:
            data = self.r.offset("sk_buff.data").offset
        except _NOT_IN_KERNEL as err:
            raise ExprError(f"sk_buff.data: {err}") from None
        text = "+0x%x(%s)" % (data, text)
        base = self._skb_struct(sname)
        off = 0
        if sname == "struct ethhdr":
            if layer != 2:
                raise ExprError(f"can not get ethhdr at layer{layer}")
        else:
            if layer == 2:
                eth = self._skb_struct("struct ethhdr")
                off += eth.db.sizeof(eth.id) or 0
            if sname == "struct iphdr":
                if layer > 3:
                    raise ExprError(f"can not get iphdr at layer{layer}")
            elif layer < 4:
                ip = self._skb_struct("struct iphdr")
                off += ip.db.sizeof(ip.id) or 0
        moff, cur = self._net_member(base, member, e)
        return text, off + moff, cur

    def _net_member(self, base: TypeRef, word: str, what: str) -> tuple:
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[\s*(\d+)\s*\])?", word)
        if m and m.group(1) in NET_DATAS and base.db.find_member(base.id, m.group(1)) is None:
            esize, etype = NET_DATAS[m.group(1)]
            idx = int(m.group(2) or 0)
            hdr = base.db.sizeof(base.id) or 0
            cur = _Cur(None, None, 0, etype, NET_DATA_BYTES, True, None, named=True)
            cur.elem_size = esize
            return hdr + idx * esize, cur
        return self._member(base, word, what)

    # ---- the fetch type --------------------------------------------------------------
    def _suffix(self, text: str, cur: _Cur, fmt: str) -> str:
        t = cur.text
        if "char *" in t:
            return "+0x0(%s):string" % text
        if (t == "char" or " char" in t) and cur.array:
            return text + ":string"
        if cur.bits is not None and not self.compat:
            _off, bit, width, unit = cur.bits
            return text + ":b%d@%d/%d" % (width, bit, unit * 8)
        if cur.named and cur.array:
            size = cur.elem_size
            if size is None:
                size = self._type_size(cur.db, cur.elem, t)
        elif cur.named:
            size = cur.size
        else:
            size = self._type_size(cur.db, None if cur.ptrs else cur.tid, t, cur.ptrs)
        if size not in FETCH_BITS:
            raise ExprError(f"last member type {t} ({size} bytes) can not be shown: "
                            f"fetch a member of it")
        return text + ":%s%d" % (fmt, FETCH_BITS[size])

    def _type_size(self, db, tid, text, ptrs=0):
        if ptrs or "*" in text:
            return 8 if (db is None or db.ptr_size == 8) else db.ptr_size
        if db is not None and tid is not None:
            base = db.strip(tid)
            if db.type(base).kind in COMPOSITE:
                return None
            return db.sizeof(tid)
        return self.r.sizeof_name(text)


@dataclass
class _Func:
    name: str
    params: list
    ret_id: Optional[int]


@dataclass
class _P:
    type: str
    type_id: int


def _lookup_func(r: Resolver, name: str):
    """(db, _Func) of the first function of that name (overlays first), as the client does."""
    for src in r.sources:
        rows = src.functions(name)
        if rows:
            (fname, proto, _static, _file, _line, _module) = rows[0]
            pt = src.type(proto)
            params = [_P(src.spelling(t), t) for (_n, t) in src.params(proto)]
            return src, _Func(fname, params, pt.ref)
    raise ExprError(f"no {name} debuginfo in the DB (no such function in this kernel)")


def translate(r: Optional[Resolver], lines, arch: str = "x86_64", compat: bool = False,
              uprobes: bool = False, debug_dirs=None) -> list:
    """Translate surftrace probe lines; returns [Probe].  Raises ExprError (with the probe
    text) on the first bad line.

    Kernel probes (p, r, e) need `r`.  User-space probes (P, R: resolver/uprobe/) are
    translated only with `uprobes=True` (they open files of this machine, so the server does
    not offer them); a Go `R` gives one probe per RET instruction.  `debug_dirs`: where
    separate debug files are looked for by build-id (default /usr/lib/debug)."""
    tr = _Translator(r, arch, compat) if r is not None else None
    utr = None
    out = []
    try:
        for i, line in enumerate(lines):
            line = line.strip("\n")
            if not line:
                continue
            if len(line) > MAX_EXPR_LEN:
                raise ExprError(f"probe {i}: longer than {MAX_EXPR_LEN} characters")
            if uprobes and line.split(None, 1)[:1] in (["P"], ["R"]):
                if utr is None:
                    from .uprobe import UprobeTranslator
                    utr = UprobeTranslator(compat, **({"debug_dirs": debug_dirs}
                                                      if debug_dirs else {}))
                try:
                    out.extend(utr.translate(i, line))
                except DbhiveError as e:    # keep the kind (and exit code): no such file...
                    raise type(e)(f"{line!r}: {e}") from None
                continue
            try:
                if tr is None:
                    split_probe(line)
                    raise ExprError("kernel probes need a kernel DB (--db, --hive)")
                out.append(_translate_one(tr, r, i, line))
            except ExprError as e:
                raise ExprError(f"{line!r}: {e}") from None
            except CorruptDB as e:       # a damaged DB, not a bad expression: its own code
                raise CorruptDB(f"{line!r}: {e}") from None
            except ResolverError as e:
                raise ExprError(f"{line!r}: {e}") from None
    finally:
        if utr is not None:
            utr.close()
    return out


def _translate_one(tr: _Translator, r: Resolver, i: int, line: str) -> Probe:
    res = split_probe(line)
    kind, symbol = res["type"], res["symbol"]
    flt = translate_filter(res["filter"]) if res["filter"] else ""
    if kind == "e":
        return Probe("e", symbol, flt, line)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*(\+(0x[0-9a-fA-F]+|\d+))?", symbol):
        raise ExprError(f"bad symbol {symbol!r} (func or func+offset)")
    func_name = symbol.split("+", 1)[0]
    in_body = "+" in symbol
    db, func = _lookup_func(r, func_name)
    tr._fdb = db
    text = "%s:%s%d %s" % (kind, kind, i, symbol)
    seen = []
    for e in res["args"]:
        if "=" not in e:
            raise ExprError(f"{e!r}: expected var=expression")
        var = e.split("=", 1)[0]
        fetch = tr.arg(e, kind, in_body, func)
        if var in seen:
            raise ExprError(f"var {var} is already used in a previous expression")
        seen.append(var)
        text += " %s=%s" % (var, fetch)
    return Probe(kind, text, flt, line)
