"""Checks of the pahole oracle itself (tests/pahole_oracle.py).

1. Against the compiler: data/oracle-src/layouts.c is compiled with gcc -g; the program
   prints every member's offsetof/sizeof and, for bitfields, the bit found set after
   assigning the field in a zeroed struct.  pahole's view of the same binary, as parsed,
   must agree member for member (DWARF 4 and 5, and BTF encoded from it).
2. Against bpftool: every uniquely named struct/union of this machine's kernel BTF, as
   bpftool dumps it raw (absolute bit offsets), must match the parse of pahole's output.
3. The parser refuses what it does not understand.
"""
from __future__ import annotations

import collections
import math
import os
import re
import shutil
import subprocess

import pytest

from tests.support import need_tool
from tests.support.pahole_oracle import (Layout, PaholeParseError, pahole_layouts,
                           pahole_typedef, parse_pahole_output, typedef_target)

SRC = os.path.join(os.path.dirname(__file__), "..", "data", "oracle-src")


# ---------------------------------------------------------------------------------------
# 1. The compiler's layouts
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["-gdwarf-4", "-gdwarf-5"])
def layouts_binary(request, tmp_path_factory):
    """layouts.c built with gcc, and what the program printed (see check.h)."""
    need_tool("gcc")
    out_dir = tmp_path_factory.mktemp("oracle" + request.param)
    exe = str(out_dir / "layouts")
    subprocess.run(["gcc", request.param, "-O0", "-w", "-o", exe,
                    os.path.join(SRC, "layouts.c"), os.path.join(SRC, "layouts_dup.c")],
                   check=True)
    truth = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    return exe, truth


def compiler_layouts(truth: str):
    """[(key, size, {path: record})] in the order printed; a key may occur twice."""
    groups = []
    for line in truth.splitlines():
        kind, key, *rest = line.split("\t")
        if kind == "S":
            groups.append((key, int(rest[0]), {}))
            continue
        path = rest[0].replace("[0]", "")   # `vlan[0].id`: pahole shows element 0 as vlan.id
        assert groups[-1][0] == key, line
        if kind == "M":
            dims = [] if rest[3] == "-" else [int(d) for d in rest[3].split(",")]
            groups[-1][2][path] = ("M", int(rest[1]), int(rest[2]), dims)
        else:
            groups[-1][2][path] = ("B", int(rest[1]), int(rest[2]), int(rest[3]))
    return groups


def check_against_compiler(found: dict, truth: str, flat_arrays: bool = False):
    for key, size, members in compiler_layouts(truth):
        # A duplicated name: the layout meant is the one with these member names.
        candidates = [lay for lay in found.get(key, [])
                      if set(lay.paths()) == set(members)]
        assert len(candidates) == 1, (key, [lay.paths() for lay in found.get(key, [])],
                                      sorted(members))
        lay = candidates[0]
        assert lay.size == size, key
        for m in lay.members:
            what = (key, m.path, m)
            rec = members[m.path]
            if rec[0] == "M":
                _, offset, msize, dims = rec
                assert (m.offset, m.size) == (offset, msize), what
                assert m.bit_offset is None and m.bit_size is None, what
                if flat_arrays and len(dims) > 1:
                    dims = [math.prod(dims)]
                assert m.array_dims == dims, what
            else:
                _, bitpos, width, unit = rec
                assert m.bit_offset_total == bitpos, what
                assert m.bit_size == width, what
                assert m.size == unit, what
                # The storage unit is the naturally aligned one holding the first bit.
                assert m.offset == bitpos // (unit * 8) * unit, what


def test_dwarf_matches_compiler(layouts_binary):
    exe, truth = layouts_binary
    found = pahole_layouts(exe, "dwarf")
    check_against_compiler(found, truth)
    # Two layouts under one name (one per compilation unit), and a function-local struct.
    assert sorted(lay.size for lay in found["struct dup"]) == [8, 24]
    assert "struct local_only" in found


def test_btf_matches_compiler(layouts_binary, tmp_path):
    exe, truth = layouts_binary
    btf = str(tmp_path / "layouts.btf")
    subprocess.run(["pahole", f"--btf_encode_detached={btf}", exe], check=True,
                   capture_output=True)
    found = pahole_layouts(btf, "btf")
    # pahole 1.24's BTF encoder flattens multi-dimensional arrays (m[2][3][4] -> m[24]).
    assert found["struct arrays"][0].member("m").array_dims == [24]
    check_against_compiler(found, truth, flat_arrays=True)


def test_typedef_oracle(layouts_binary):
    """`typedef struct {...} my_atomic_t`, which pahole's full output leaves out: its layout
    by `pahole -C` is the compiler's (sizeof of a member of that type); no typedef is an
    error, not an answer."""
    exe, truth = layouts_binary
    lay = pahole_typedef(exe, "my_atomic_t")
    refs = dict((k, m) for k, _s, m in compiler_layouts(truth))["struct anon"]["refs"]
    assert (lay.key, lay.size) == ("struct my_atomic_t", refs[2])
    assert [(m.path, m.offset) for m in lay.members] == [("counter", 0)]
    for name in ("anon", "no_such_type"):                 # a struct; nothing
        with pytest.raises(ValueError):
            pahole_typedef(exe, name)
    with pytest.raises(ValueError, match="anonymous struct"):
        typedef_target(exe, "my_atomic_t")
    with pytest.raises(ValueError):
        typedef_target(exe, "anon")


def test_type_text(layouts_binary):
    found = pahole_layouts(layouts_binary[0], "dwarf")

    def member(key, path):
        return found[key][0].member(path)

    assert member("struct fnptrs", "func").type == "void (*)(struct rcu_head *)"
    assert member("struct fnptrs", "get").type == "char * (*)(const char *, int)"
    assert member("struct fnptrs", "vararg").type == "int (*)(const char *, ...)"
    handlers = member("struct arrays", "handlers")
    assert (handlers.type, handlers.array_dims) == ("void (*)(int)", [3])
    assert member("struct arrays", "argv").type == "char *"
    assert member("struct arrays", "tail").array_dims == [0]
    assert member("struct anon", "named").type == "struct inner"
    assert member("struct anon", "refs").type == "my_atomic_t"
    assert member("struct anon", "in_place").type == "struct {...}"
    assert member("struct anon", "ptr_to_anon").type == "struct {...} *"
    assert member("struct anon", "mode").type == "enum {...}"
    assert member("struct attrs", "aligned16").type == "int"   # attribute dropped
    assert member("struct bits", "col").type == "enum color"
    # The pointee's members of `struct {...} *ptr_to_anon` are not members of struct anon.
    assert not [p for p in found["struct anon"][0].paths() if p.startswith("ptr_to_anon.")]


# ---------------------------------------------------------------------------------------
# 2. This machine's kernel BTF, against bpftool's raw dump
# ---------------------------------------------------------------------------------------

_BPFTOOL_TYPE = re.compile(r"\[(\d+)\] (\w+) '([^']*)'(.*)")
_BPFTOOL_MEMBER = re.compile(
    r"\t'([^']*)' type_id=(\d+) bits_offset=(\d+)(?: bitfield_size=(\d+))?$")


def bpftool_layouts(path: str) -> dict:
    """{'struct NAME': [(size, {path: (absolute bit offset, bitfield size or None)})]}."""
    bpftool = need_tool("bpftool")
    dump = subprocess.run([bpftool, "btf", "dump", "file", path], capture_output=True,
                          text=True, check=True).stdout
    types = {}
    current = None
    for line in dump.splitlines():
        m = _BPFTOOL_TYPE.match(line)
        if m:
            attrs = dict(re.findall(r"(\w+)=(\S+)", m.group(4)))
            current = types[int(m.group(1))] = dict(kind=m.group(2), name=m.group(3),
                                                    attrs=attrs, members=[])
            continue
        if current and current["kind"] in ("STRUCT", "UNION"):
            mm = _BPFTOOL_MEMBER.match(line)
            assert mm, line
            current["members"].append((mm.group(1), int(mm.group(2)), int(mm.group(3)),
                                       int(mm.group(4)) if mm.group(4) else None))

    def strip(tid):
        # Qualifiers and arrays (pahole shows element 0 of an array of anonymous structs).
        while types[tid]["kind"] in ("CONST", "VOLATILE", "RESTRICT", "TYPE_TAG", "ARRAY"):
            attrs = types[tid]["attrs"]
            tid = int(attrs["type_id"])
        return types[tid]

    def flatten(t, base, prefix, out):
        for name, tid, bits, bitsize in t["members"]:
            inner = strip(tid)
            inline = inner["kind"] in ("STRUCT", "UNION") and inner["name"] == "(anon)"
            if name == "(anon)":
                flatten(inner, base + bits, prefix, out)
                continue
            out[prefix + name] = (base + bits, bitsize)
            if inline:
                flatten(inner, base + bits, prefix + name + ".", out)

    result = collections.defaultdict(list)
    for t in types.values():
        if t["kind"] in ("STRUCT", "UNION") and t["name"] != "(anon)":
            members = {}
            flatten(t, 0, "", members)
            result[f"{t['kind'].lower()} {t['name']}"].append((int(t["attrs"]["size"]),
                                                               members))
    return result


@pytest.fixture(scope="module")
def kernel_layouts(running_btf):
    return pahole_layouts(running_btf, "btf")


def test_kernel_btf_matches_bpftool(running_btf, kernel_layouts):
    truth = bpftool_layouts(running_btf)
    assert set(kernel_layouts) == set(truth)
    compared = 0
    for key, layouts in kernel_layouts.items():
        if len(layouts) != 1 or len(truth[key]) != 1:
            # A name with several BTF types: pahole prints one per distinct text (types
            # that differ only in a member's same-named type print alike), so compare the
            # sets of distinct layouts.
            ours = {(lay.size, tuple(sorted((m.path, m.bit_offset_total, m.bit_size)
                                            for m in lay.members)))
                    for lay in layouts}
            theirs = {(size, tuple(sorted((p,) + pos for p, pos in members.items())))
                      for size, members in truth[key]}
            assert ours == theirs, key
            continue
        lay: Layout = layouts[0]
        size, members = truth[key][0]
        assert lay.size == size, key
        assert set(lay.paths()) == set(members), key
        for m in lay.members:
            assert (m.bit_offset_total, m.bit_size) == members[m.path], (key, m)
        compared += 1
    assert compared > 5000


def test_kernel_btf_spot_checks(kernel_layouts):
    assert len(kernel_layouts) > 5000

    def one(key) -> Layout:
        assert len(kernel_layouts[key]) == 1, key
        return kernel_layouts[key][0]

    task = one("struct task_struct")
    assert task.size > 1000 and len(task.members) > 100
    assert task.member("files").type == "struct files_struct *"
    assert task.member("comm").array_dims == [16] and task.member("comm").type == "char"
    assert task.member("__state").size == 4   # `state` before 5.14

    common = one("struct sock_common")
    # Members of anonymous unions/structs come flattened, at absolute offsets.
    assert common.member("skc_daddr").offset == 0
    assert common.member("skc_rcv_saddr").offset == 4
    assert common.member("skc_num").offset == common.member("skc_dport").offset + 2
    ipv6only = common.member("skc_ipv6only")
    assert ipv6only.bit_size == 1 and ipv6only.bit_offset is not None

    sock = one("struct sock")
    assert sock.member("__sk_common").offset == 0
    assert sock.member("__sk_common").type == "struct sock_common"
    for name in ("sk_type", "sk_protocol"):   # real fields since 5.6
        assert sock.member(name).size == 2
    assert sock.member("sk_backlog").type == "struct {...}"
    assert sock.member("sk_backlog.tail").offset > sock.member("sk_backlog").offset

    file = one("struct file")
    for name in ("f_pos", "f_op", "f_inode", "private_data", "f_path"):
        file.member(name)

    skb = one("struct sk_buff")
    for name in ("len", "data", "head", "protocol", "next", "dev", "pkt_type"):
        skb.member(name)
    assert skb.member("pkt_type").bit_size == 3

    # Every member lies inside its struct.  A bitfield's bits do, but not always its
    # storage unit: packed `struct orc_entry` (6 bytes) has `sp_reg:4` in a 4-byte unit at 4.
    # Members shown for a flexible array of an anonymous struct (btf_id_set8.pairs[]) are
    # element 0's, past the end.
    for key, layouts in kernel_layouts.items():
        for lay in layouts:
            flexible = tuple(m.path + "." for m in lay.members if 0 in m.array_dims)
            for m in lay.members:
                if flexible and m.path.startswith(flexible):
                    continue
                if m.bit_size is None:
                    assert 0 <= m.offset and m.offset + m.size <= lay.size, (key, m)
                else:
                    assert 0 <= m.bit_offset_total, (key, m)
                    assert m.bit_offset_total + m.bit_size <= lay.size * 8, (key, m)


def test_cache_is_used(running_btf, kernel_layouts, tmp_path, monkeypatch):
    monkeypatch.setenv("DBHIVE_TEST_CACHE", str(tmp_path))
    first = pahole_layouts(running_btf, "btf")
    cached = os.listdir(tmp_path / "pahole-cache")
    assert len(cached) == 1
    assert pahole_layouts(running_btf, "btf") == first == kernel_layouts
    assert os.listdir(tmp_path / "pahole-cache") == cached


# ---------------------------------------------------------------------------------------
# 3. The parser refuses what it does not understand
# ---------------------------------------------------------------------------------------

GOOD = """struct s {
\tint                        a;                    /*     0     4 */
\tunsigned int               b:3;                  /*     4: 0  4 */

\t/* size: 8, cachelines: 1, members: 2 */
};
"""


def test_parser_accepts_good_text():
    (lay,) = parse_pahole_output(GOOD)
    assert (lay.key, lay.size, lay.paths()) == ("struct s", 8, ["a", "b"])


def test_parser_skips_the_padding_pahole_invents():
    """pahole (DWARF of a clang-built object) prints padding as an unnamed bitfield of the
    previous member's type, whatever it is: a pointer, a function pointer, an in-place
    union.  None is a member."""
    invented = GOOD.replace("/*     4: 0  4 */\n", "/*     4: 0  4 */\n"
                            "\tstruct x *                 :64;\n"
                            "\tvoid                       (*)(int *):64;\n"
                            "\tunion {\n\t\tint        c;             /*     0     4 */\n"
                            "\t} :4096;\n")
    (lay,) = parse_pahole_output(invented)
    assert (lay.key, lay.size, lay.paths()) == ("struct s", 8, ["a", "b"])
    with pytest.raises(PaholeParseError):            # a named one without a position is not
        parse_pahole_output(GOOD.replace("\n\n", "\n\tint                        c:3;\n\n"))


@pytest.mark.parametrize("bad, lineno", [
    (GOOD.replace("/* size: 8", "/* sizes: 8"), 5),                  # unknown comment
    (GOOD.replace("/*     0     4 */", ""), 2),                      # no offset comment
    (GOOD.replace("members: 2", "members: 3"), 6),                   # a member went missing
    (GOOD.replace("b:3;  ", "b;    "), 3),                           # bit position, no width
    (GOOD.replace("struct s {", "struct s"), 1),
    (GOOD.replace("};\n", ""), 1),                                   # never closed
    (GOOD.replace("\tint ", "\t    "), 2),                           # no type
])
def test_parser_rejects_bad_text(bad, lineno):
    with pytest.raises(PaholeParseError) as info:
        parse_pahole_output(bad)
    assert info.value.lineno == lineno


def test_missing_file_raises(tmp_path):
    # pahole itself exits 0 for a missing file, taking its name for a type name.
    with pytest.raises(FileNotFoundError):
        pahole_layouts(str(tmp_path / "nope"), "dwarf")
    shutil.copy("/bin/true", tmp_path / "no-debug-info")
    with pytest.raises(RuntimeError):
        pahole_layouts(str(tmp_path / "no-debug-info"), "dwarf")
