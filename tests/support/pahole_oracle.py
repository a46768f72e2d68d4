"""pahole as an independent oracle for struct/union layouts.

Runs the real `pahole` (dwarves v1.24) on an ELF file or a raw BTF file, parses its C-like
output and returns every named struct/union layout it printed, so tests can compare our
databases against it.  The parser is strict: a line it does not recognise raises
PaholeParseError naming the line, so the oracle never silently drops anything.

    pahole_layouts(path, fmt="dwarf", extra_args=()) -> {"struct NAME": [Layout, ...], ...}

Keys are "struct NAME" / "union NAME".  A name can have several distinct layouts (different
compilation units, or several BTF types of one name), hence a list, in pahole's order.
pahole prints one layout per distinct *text*: two types that differ only in which same-named
type a member points to print alike and appear once (e.g. the kernel's two BTF
`struct elf_note_info`).  Anonymous top-level types (e.g. `typedef struct {...} atomic_t`)
are not printed by pahole and so are not here.  On the Debian 6.1 vmlinux the DWARF and the
BTF views give identical results (7455 names, 7466 layouts), apart from the array quirk below.

Use from tests (pytest puts tests/ on sys.path): `from pahole_oracle import pahole_layouts`.

What the fields mean (all verified against gcc's offsetof()/sizeof() and bit probes in
tests/test_pahole_oracle.py, and against this machine's kernel BTF):

Layout
    kind     'struct' or 'union'
    name     the tag name, without the kind
    size     sizeof, in bytes.  Structs: the `/* size: N, ... */` comment.  Unions: pahole
             1.24 prints no such comment for unions, so every size comes from a second run,
             `pahole -s` (name/size per type, in the same order as the full output; names are
             checked to line up, and struct sizes are checked against the comment).
    members  MemberLayout list, in pahole's (declaration) order

MemberLayout
    path       The member name as C code spells it from the outer struct.  Members of
               anonymous structs/unions are flattened with no prefix (`skc_daddr` in
               sock_common).  A member of a *named* struct type (`struct list_head tasks`)
               is one entry: pahole does not expand it.  A named member whose type is an
               anonymous struct/union declared in place (`struct {...} sk_backlog;`) is an
               entry itself (type 'struct {...}') followed by its own members, which pahole
               does print, as 'sk_backlog.rmem_alloc' etc. (recursively).  For an array of
               such a type (`struct {...} vlan[2]`) those children describe element 0.  For a
               pointer to one (`struct {...} *parts`) pahole prints the pointee's members with
               offsets relative to the pointee; they are not members of this struct and are
               left out.
    type       The type text pahole printed with the member name and array dimensions
               removed and runs of blanks collapsed: 'struct list_head *', 'char',
               'long unsigned int', 'void (*)(struct rcu_head *)' for a function pointer,
               'struct {...}' / 'union {...}' / 'enum {...}' for a type declared in place
               (with any qualifiers and '*' pahole printed around it).
               `__attribute__((...))` annotations are dropped.  See the quirks below: the
               text is pahole's, not always valid C.
    offset     Byte offset from the start of the outermost struct.  pahole prints absolute
               offsets for members of nested anonymous and in-place types (it has a
               --rel_offset flag to make them relative, which we do not pass); verified.
               For a bitfield: the start of the storage unit pahole attributes it to, which is
               the naturally aligned unit of the declared type's size that holds the field's
               first bit: floor(first_bit / (size*8)) * size.
    size       Bytes, from the comment: sizeof the member (all elements for an array, 0 for a
               flexible or zero-length array).  For a bitfield: sizeof its declared type.
    bit_offset None unless a bitfield.  The bit number, within the storage unit at `offset`,
               of the field's least significant bit, counted from the unit's least
               significant bit.  On a little-endian target that makes
               `offset*8 + bit_offset` (see `bit_offset_total`) the field's first bit counted
               from bit 0 of byte 0 of the struct -- the same number whichever unit is
               chosen.  In packed structs a field can run past its unit (pahole printed
               `z:33` as `0:40 8`: bits 40..72 of an 8-byte unit).
    bit_size   None unless a bitfield: its width in bits.
    array_dims [] for a non-array; `comm[16]` -> [16], `m[2][3][4]` -> [2, 3, 4],
               `tail[]` and `zero[0]` -> [0].

Lines pahole prints that are not members and are skipped: blank lines, the `/* ... */`
commentary (holes, paddings, cacheline boundaries, sums, 'Bitfield combined with ...',
'Force alignment ...'), enumerator lines of an in-place `enum {...}`, and the unnamed
bitfields pahole invents to reproduce a layout (`unsigned int :0;`, `u64 :13;`, printed
without an offset comment): C has no member there.  Every such comment must match a known
form, otherwise the parser raises.

pahole 1.24 quirks seen while writing this (they are pahole's, kept as printed):
  * no `/* size: */` comment for unions (hence the `-s` run);
  * function-local structs are printed only with --show_private_classes (we pass it, so the
    DWARF view of a vmlinux has the same struct set as its BTF view);
  * an array of function pointers `void (*h[3])(int)` prints as `void (*h)(int)[3]`;
  * a pointer to an array `int (*p)[5]` prints as `int * p`;
  * a const pointer `char *const p` prints as `const char * p`, and
    `const char *const a[2]` as `const const const char * a[2]`;
  * a function pointer returning a function pointer prints as garbage such as
    `void * ()(char) * (*f)(int)` (still parsed: the name is the `(*f)`);
  * pahole's BTF encoder flattens multi-dimensional arrays: `m[2][3][4]` is one ARRAY of 24
    in the BTF data, so the BTF view says `m[24]` (neither kernel's .BTF checked has an ARRAY
    of ARRAY, per bpftool) while the DWARF view says [2, 3, 4];
  * on newer kernels' BTF it warns `Unknown kind 17/18` (DECL_TAG/TYPE_TAG) on stderr; those
    kinds did not affect any struct member on the 6.18 kernel checked.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

# Bump when the parser's output changes, so stale cache entries are not reused.
PARSER_VERSION = 1

# Smaller inputs (test programs built in temporary directories) are parsed again each time:
# that takes milliseconds, and their ever-new paths would only litter the cache.
CACHE_MIN_BYTES = 1 << 20

# Flags always passed.  --show_private_classes makes pahole print structs declared inside
# functions too (BTF has no notion of that, so its view already includes them).
BASE_ARGS = ("--show_private_classes",)

class PaholeParseError(Exception):
    """pahole printed something this parser does not understand."""

    def __init__(self, lineno: int, line: str, why: str):
        super().__init__(f"pahole output line {lineno}: {why}: {line!r}")
        self.lineno = lineno
        self.line = line


@dataclass
class MemberLayout:
    path: str
    type: str
    offset: int
    size: int
    bit_offset: Optional[int] = None
    bit_size: Optional[int] = None
    array_dims: List[int] = field(default_factory=list)

    @property
    def is_bitfield(self) -> bool:
        return self.bit_size is not None

    @property
    def bit_offset_total(self) -> int:
        """First (least significant) bit of the member, counted from the struct's bit 0."""
        return self.offset * 8 + (self.bit_offset or 0)


@dataclass
class Layout:
    kind: str
    name: str
    size: int
    members: List[MemberLayout]

    @property
    def key(self) -> str:
        return f"{self.kind} {self.name}"

    def member(self, path: str) -> MemberLayout:
        """The member with this path (KeyError if none)."""
        for m in self.members:
            if m.path == path:
                return m
        raise KeyError(f"{self.key} has no member {path!r}")

    def paths(self) -> List[str]:
        return [m.path for m in self.members]


# ---------------------------------------------------------------------------------------
# Running pahole (with an on-disk cache)
# ---------------------------------------------------------------------------------------

def pahole_layouts(path: str, fmt: str = "dwarf", extra_args: Iterable[str] = (),
                   cache: bool = True) -> Dict[str, List[Layout]]:
    """All named struct/union layouts pahole prints for `path` (ELF or raw BTF file).

    fmt is pahole's -F: 'dwarf' or 'btf'.  extra_args are added to both pahole runs (e.g.
    ['-C', 'task_struct']; never --expand_types, which this parser does not handle).
    The parse of a file of CACHE_MIN_BYTES or more is cached as JSON under
    $DBHIVE_TEST_CACHE (default /var/cache/dbhive-ci)/pahole-cache/, keyed by the file's
    path, size and mtime, fmt, the arguments, pahole's version and PARSER_VERSION
    (`cache=False`: not, for a file made afresh by a test).
    """
    if fmt not in ("dwarf", "btf"):
        raise ValueError(f"fmt must be 'dwarf' or 'btf', not {fmt!r}")
    # pahole exits 0 for a missing file (it takes the name for a type), so check first.
    st = os.stat(path)
    extra = list(extra_args)
    base = ["pahole", "-F", fmt, *BASE_ARGS, *extra]

    cache_file = None
    if cache and st.st_size >= CACHE_MIN_BYTES:
        cache_file = _cache_path([os.path.abspath(path), st.st_size, st.st_mtime_ns, fmt,
                                  extra, _pahole_version(), PARSER_VERSION])
        cached = _cache_load(cache_file)
        if cached is not None:
            return cached

    # Both runs load the whole file (15 s, 3 GB for a distro vmlinux): run them side by side.
    # The second one writes to files, so neither can stall on a full pipe.
    with tempfile.TemporaryFile() as s_out, tempfile.TemporaryFile() as s_err:
        sizes = subprocess.Popen(base + ["-s", path], stdout=s_out, stderr=s_err)
        full = subprocess.Popen(base + [path], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        full_out, full_err = full.communicate()
        sizes.wait()
        s_out.seek(0)
        s_err.seek(0)
        sizes_out, sizes_err = s_out.read(), s_err.read()
    for proc, err in ((full, full_err), (sizes, sizes_err)):
        if proc.returncode != 0:
            raise RuntimeError(f"{proc.args} exited {proc.returncode}: "
                               f"{err.decode(errors='replace')[-2000:]}")

    layouts = parse_pahole_output(full_out.decode("utf-8", errors="strict"))
    if not layouts:
        raise RuntimeError(f"pahole printed no struct/union for {path} "
                           f"(stderr: {full_err.decode(errors='replace')[-2000:]})")
    _apply_sizes(layouts, sizes_out.decode())

    result: Dict[str, List[Layout]] = {}
    for lay in layouts:
        result.setdefault(lay.key, []).append(lay)
    if cache_file:
        _cache_store(cache_file, result)
    return result


def _pahole_version() -> str:
    return subprocess.run(["pahole", "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _cache_path(key_parts) -> str:
    digest = hashlib.sha256(json.dumps(key_parts).encode()).hexdigest()[:32]
    root = os.environ.get("DBHIVE_TEST_CACHE", "/var/cache/dbhive-ci")
    return os.path.join(root, "pahole-cache", digest + ".json")


def _cache_load(cache_file: str) -> Optional[Dict[str, List[Layout]]]:
    try:
        with open(cache_file) as fh:
            raw = json.load(fh)
    except (OSError, ValueError):
        return None
    return {key: [Layout(kind=d["kind"], name=d["name"], size=d["size"],
                         members=[MemberLayout(**m) for m in d["members"]])
                  for d in lays]
            for key, lays in raw.items()}


def _cache_store(cache_file: str, result: Dict[str, List[Layout]]) -> None:
    try:
        os.makedirs(os.path.dirname(cache_file), exist_ok=True)
        tmp = f"{cache_file}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump({k: [asdict(lay) for lay in v] for k, v in result.items()}, fh)
        os.replace(tmp, cache_file)   # atomic: concurrent test runs never see half a file
    except OSError:
        pass   # an unwritable cache only costs time


def _apply_sizes(layouts: List[Layout], sizes_text: str) -> None:
    """Fill in sizes from `pahole -s` output (NAME<TAB>SIZE<TAB>HOLES, same order)."""
    rows = [line.split("\t") for line in sizes_text.splitlines() if line]
    if len(rows) != len(layouts):
        raise RuntimeError(f"pahole -s listed {len(rows)} types, the full output "
                           f"{len(layouts)}")
    for lay, row in zip(layouts, rows):
        if len(row) != 3 or row[0] != lay.name:
            raise RuntimeError(f"pahole -s row {row!r} does not line up with {lay.key}")
        size = int(row[1])
        if lay.size >= 0 and lay.size != size:
            raise RuntimeError(f"{lay.key}: size comment says {lay.size}, -s says {size}")
        lay.size = size


# ---------------------------------------------------------------------------------------
# Typedefs, one at a time (`pahole -C NAME`)
# ---------------------------------------------------------------------------------------

MAX_TYPEDEF_CHAIN = 32          # real chains are a few steps; a longer one is a loop


def pahole_typedef(path: str, name: str, fmt: str = "dwarf"):
    """What typedef NAME is, as `pahole -C NAME` prints it: the Layout of the anonymous
    struct/union it names (`typedef struct {...} NAME;`: pahole's full output leaves those
    out; the Layout is keyed 'struct NAME'; a union's size is -1, pahole prints none), or the
    spelling of the type it aliases (`typedef u32 NAME;` -> 'u32').  ValueError when pahole
    prints no typedef of that name."""
    p = subprocess.run(["pahole", "-F", fmt, *BASE_ARGS, "-C", name, path],
                       capture_output=True, text=True, check=True)
    lines = p.stdout.rstrip("\n").splitlines()
    head = re.fullmatch(r"typedef (struct|union) \{", lines[0]) if lines else None
    if head:
        if lines[-1] != f"}} {name};":
            raise ValueError(f"pahole -C {name} {path}: typedef block not closed by "
                             f"'}} {name};': {lines[-1]!r}")
        lay, = parse_pahole_output("\n".join([f"{head.group(1)} {name} {{", *lines[1:-1],
                                               "};"]))
        return lay
    m = re.fullmatch(rf"typedef (.+?) {re.escape(name)};", p.stdout.strip())
    if not m:
        raise ValueError(f"pahole -C {name} {path}: not a typedef: "
                         f"{(p.stdout or p.stderr).strip()[:200]!r}")
    return _squash(m.group(1))


def typedef_target(path: str, name: str, fmt: str = "dwarf") -> str:
    """The type a typedef chain ends in, each step by pahole (`kotest_id_t` -> `u32` ->
    `__u32` -> 'unsigned int'): the first spelling pahole has no typedef of.  ValueError when
    NAME itself is no typedef, or for a typedef of an anonymous struct/union."""
    chain = [name]
    while len(chain) <= MAX_TYPEDEF_CHAIN:
        try:
            nxt = pahole_typedef(path, chain[-1], fmt)
        except ValueError:
            if len(chain) == 1:
                raise
            return chain[-1]
        if isinstance(nxt, Layout):
            raise ValueError(f"{' -> '.join(chain)} is an anonymous {nxt.kind}")
        chain.append(nxt)
    raise ValueError(f"typedef chain longer than {MAX_TYPEDEF_CHAIN}: {' -> '.join(chain)}")


# ---------------------------------------------------------------------------------------
# Parsing pahole's text output
# ---------------------------------------------------------------------------------------

# `/* off size */`, or `/* off:bit size */` for a bitfield, at the end of a member line.
_POS_COMMENT = re.compile(r"/\*\s*(\d+)(?::\s*(\d+))?\s+(\d+)\s*\*/$")
_SIZE_COMMENT = re.compile(r"/\* size: (\d+), cachelines: \d+, members: (\d+) \*/$")
# Commentary pahole prints inside a struct; anything else in a comment is an error.
_KNOWN_COMMENTS = re.compile(
    r"/\* (?:"
    r"XXX \d+ bytes? hole, try to pack"
    r"|XXX \d+ bits? hole, try to pack"
    r"|XXX last struct has \d+ bytes? of padding"
    r"|--- cacheline \d+ boundary \(\d+ bytes\)(?: was \d+ bytes? ago)? ---"
    r"|sum members: \d+(?:, holes: \d+, sum holes: \d+)?"
    r"|sum bitfield members: \d+ bits(?: \(\d+ bytes\)|, bit holes: \d+, sum bit holes: \d+ bits)"
    r"|padding: \d+"
    r"|paddings: \d+, sum paddings: \d+"
    r"|bit_padding: \d+ bits"
    r"|last cacheline: \d+ bytes"
    r"|forced alignments: \d+(?:, forced holes: \d+, sum forced holes: \d+)?"
    r"|Bitfield combined with (?:next|previous) fields"
    r"|Force alignment to the next boundary:"
    r"|Force padding:"
    r") \*/$")
_TOP_OPEN = re.compile(r"(struct|union) (\w+) \{$")
_NESTED_OPEN = re.compile(r"((?:(?:const|volatile) )*)(struct|union|enum) \{$")
_ENUMERATOR = re.compile(r"\w+\s*=\s*-?\d+,$")
# `unsigned int :0;`, `struct x *   :64;`, `void (*)(int):64;` (no name, no offset comment)
_UNNAMED_BITFIELD = re.compile(r".*\W:\d+;$")
_DIMS = re.compile(r"((?:\[\d*\]\s*)+)$")
_FUNC_PTR_NAME = re.compile(r"\(\s*\*+\s*(\w+)\s*((?:\[\d*\]\s*)*)\)")
_PLAIN_DECL = re.compile(r"(.*?)\b(\w+)$", re.S)
_BITFIELD = re.compile(r"(.*?)\s*:\s*(\d+)$")


@dataclass
class _Member:
    """A member line as printed: name, type text, position."""
    name: str
    type: str
    dims: List[int]
    offset: int
    size: int
    bit_offset: Optional[int]
    bit_size: Optional[int]


@dataclass
class _Block:
    """An open `struct {`/`union {`/`enum {` (or the top-level struct) and what's in it."""
    kind: str
    quals: str
    lineno: int
    items: list = field(default_factory=list)   # _Member, or (_Member, its items)
    size_comment: Optional[Tuple[int, int]] = None   # (size, members) at this level


def _strip_attributes(text: str) -> str:
    """Remove every `__attribute__((...))`, balancing the parentheses."""
    while True:
        start = text.find("__attribute__")
        if start < 0:
            return text
        i = text.index("(", start)
        depth = 0
        for j in range(i, len(text)):
            if text[j] == "(":
                depth += 1
            elif text[j] == ")":
                depth -= 1
                if depth == 0:
                    break
        else:
            raise ValueError("unbalanced __attribute__")
        text = text[:start] + text[j + 1:]


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _dims(text: str) -> List[int]:
    return [int(d) if d else 0 for d in re.findall(r"\[(\d*)\]", text)]


def _split_position(line: str) -> Tuple[str, Optional[Tuple[int, Optional[int], int]]]:
    """'decl; /* off[:bit] size */' -> ('decl', (off, bit, size)); no comment -> None."""
    m = _POS_COMMENT.search(line)
    if not m:
        return line, None
    decl = line[:m.start()].rstrip()
    bit = int(m.group(2)) if m.group(2) is not None else None
    return decl, (int(m.group(1)), bit, int(m.group(3)))


def _parse_declarator(decl: str) -> Tuple[str, str, List[int], Optional[int]]:
    """'struct x * name[2][3]:4' (no ';') -> (name, type text, dims, bit width)."""
    decl = _squash(_strip_attributes(decl))
    width = None
    m = _BITFIELD.match(decl)
    if m:
        decl, width = m.group(1), int(m.group(2))
    fp = _FUNC_PTR_NAME.search(decl)
    if fp:
        # Function pointer: the name sits in `(*name)`; dims may be inside the parentheses
        # (C) or trail the parameter list (pahole 1.24's rendering of arrays of them).
        name = fp.group(1)
        dims = _dims(fp.group(2))
        rest = decl[fp.end():]
        trailing = _DIMS.search(rest)
        if trailing:
            dims += _dims(trailing.group(1))
            rest = rest[:trailing.start()]
        type_text = decl[:fp.start(1)] + ")" + rest
        type_text = re.sub(r"\(\s*(\*+)\s*\)", r"(\1)", type_text)
        return name, _squash(type_text), dims, width
    dims_m = _DIMS.search(decl)
    dims = []
    if dims_m:
        dims = _dims(dims_m.group(1))
        decl = decl[:dims_m.start()].rstrip()
    m = _PLAIN_DECL.match(decl)
    if not m or not m.group(1).strip():
        raise ValueError("no type and name")
    return m.group(2), _squash(m.group(1)), dims, width


def parse_pahole_output(text: str) -> List[Layout]:
    """Parse pahole's default output into Layouts (size -1 where pahole printed none)."""
    layouts: List[Layout] = []
    stack: List[_Block] = []
    top_name = ""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        try:
            if not stack:
                m = _TOP_OPEN.match(raw)
                if not m:
                    raise ValueError("expected `struct NAME {` or `union NAME {`")
                top_name = m.group(2)
                stack.append(_Block(kind=m.group(1), quals="", lineno=lineno))
                continue
            block = stack[-1]
            if not line:
                continue
            if block.kind == "enum":
                if _ENUMERATOR.match(line):
                    continue
                if not line.startswith("}"):
                    raise ValueError("expected an enumerator")
            if line.startswith("/*"):
                sm = _SIZE_COMMENT.match(line)
                if sm:
                    block.size_comment = (int(sm.group(1)), int(sm.group(2)))
                elif not _KNOWN_COMMENTS.match(line):
                    raise ValueError("unknown comment")
                continue
            m = _NESTED_OPEN.match(line)
            if m:
                stack.append(_Block(kind=m.group(2), quals=m.group(1), lineno=lineno))
                continue
            if line.startswith("}"):
                stack.pop()
                if not stack:
                    layouts.append(_finish_top(block, top_name, line))
                else:
                    closed = _close_nested(block, line)
                    if closed is not None:
                        stack[-1].items.append(closed)
                continue
            decl, pos = _split_position(line)
            if pos is None:
                if _UNNAMED_BITFIELD.match(line):
                    continue   # padding pahole invents; not a member in C
                raise ValueError("member line without an offset comment")
            if not decl.endswith(";"):
                raise ValueError("member declaration does not end with ';'")
            name, type_text, dims, width = _parse_declarator(decl[:-1])
            if (width is None) != (pos[1] is None):
                raise ValueError("bitfield width and bit position disagree")
            block.items.append(_Member(name=name, type=type_text, dims=dims, offset=pos[0],
                                       size=pos[2], bit_offset=pos[1], bit_size=width))
        except ValueError as exc:
            raise PaholeParseError(lineno, raw, str(exc)) from None
    if stack:
        raise PaholeParseError(stack[0].lineno, "", "struct never closed")
    return layouts


def _close_nested(block: _Block, line: str):
    """The closing line of a nested block: `} [*]* [name][dims][:w]; /* pos */`, or None
    for `} :N;`: padding pahole invents in the previous member's (in-place) type, as it
    does for `int :N;`, not a member in C."""
    decl, pos = _split_position(line)
    if pos is None and re.fullmatch(r"\}\s*:\d+;", line):
        return None
    if pos is None or not decl.endswith(";"):
        raise ValueError("nested block closed without `; /* offset size */`")
    decl = _squash(_strip_attributes(decl[1:-1]))
    width = None
    m = _BITFIELD.match(decl)
    if m:
        decl, width = m.group(1), int(m.group(2))
    m = re.fullmatch(r"((?:\* ?)*)(\w*) ?((?:\[\d*\] ?)*)", decl)
    if not m:
        raise ValueError("cannot read the declarator after '}'")
    stars, name, dims = m.group(1).replace(" ", ""), m.group(2), _dims(m.group(3))
    if (width is None) != (pos[1] is None):
        raise ValueError("bitfield width and bit position disagree")
    if not name and (stars or dims or width is not None or block.kind == "enum"):
        raise ValueError("unnamed pointer/array/bitfield/enum block")
    type_text = f"{block.quals}{block.kind} {{...}}" + (f" {stars}" if stars else "")
    member = _Member(name=name, type=type_text, dims=dims, offset=pos[0], size=pos[2],
                     bit_offset=pos[1], bit_size=width)
    # The block's members are ours only if it is stored inline (not behind a pointer).
    return member, ([] if stars else block.items)


def _finish_top(block: _Block, name: str, line: str) -> Layout:
    if re.sub(r"\s", "", _strip_attributes(line)) != "};":
        raise ValueError("expected `};` closing the struct")
    members: List[MemberLayout] = []
    _flatten(block.items, "", members)
    size = -1
    if block.size_comment is not None:
        size, count = block.size_comment
        # pahole counts the direct members (an anonymous union is one); we must agree.
        if count != len(block.items):
            raise ValueError(f"pahole says {count} members, parsed {len(block.items)}")
    return Layout(kind=block.kind, name=name, size=size, members=members)


def _flatten(items: Sequence, prefix: str, out: List[MemberLayout]) -> None:
    for item in items:
        if isinstance(item, _Member):
            member, children = item, []
        else:
            member, children = item
        if member.name:
            out.append(MemberLayout(path=prefix + member.name, type=member.type,
                                    offset=member.offset, size=member.size,
                                    bit_offset=member.bit_offset, bit_size=member.bit_size,
                                    array_dims=list(member.dims)))
            _flatten(children, prefix + member.name + ".", out)
        else:
            _flatten(children, prefix, out)   # anonymous struct/union: C flattens it
