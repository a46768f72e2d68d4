"""BTF writer, dedup and profiles on this machine's kernel: /sys/kernel/btf/vmlinux -> DB ->
BTF is the same type graph (bpftool's reading of both: `format c` and every record, order
aside), the kernel accepts it (BPF_BTF_LOAD), both byte orders, every profile."""
from __future__ import annotations

import collections
import re
import struct
import subprocess

import pytest

from dbhive import model as M
from dbhive import store
from dbhive.btf import dedup as D
from dbhive.btf import kinds as K
from dbhive.btf import profiles as P
from dbhive.btf.emit import emit
from dbhive.btf.reader import read_btf
from tests.support import need_tool
from tests.support.btf_compare import by_name_diff, c_blocks, canonical, compare, summary
from tests.support.btfout import btf_load, core_fixtures


@pytest.fixture(scope="module")
def running_graph(running_db) -> M.TypeGraph:
    return store.load_graph(running_db)


@pytest.fixture(scope="module")
def ours(running_graph, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("btf") / "running-from-db.btf"
    path.write_bytes(emit(running_graph).data)
    return str(path)


@pytest.fixture(scope="module")
def loader(ours) -> str:
    return core_fixtures(ours)["core_loader"]


def _assert_same_graph(a: str, b: str, **kw):
    ca, cb = canonical(a, **kw), canonical(b, **kw)
    diff = compare(ca, cb)
    assert all(not x and not y for x, y in diff.values()), summary(diff)
    assert ca.kinds == cb.kinds
    return ca


def test_round_trip_through_the_db_is_the_same_graph(ours, running_btf):
    need_tool("bpftool")
    c = _assert_same_graph(ours, running_btf)
    # every kind this kernel has went through: tags, per-CPU variables, enum64, float
    for kind in ("DECL_TAG", "TYPE_TAG", "VAR", "DATASEC", "ENUM64", "FLOAT", "FUNC"):
        assert c.kinds[kind] > 0, kind
    assert c_blocks(ours) == c_blocks(running_btf)
    text = [subprocess.run(["bpftool", "btf", "dump", "file", p, "format", "c"], check=True,
                           capture_output=True, text=True).stdout for p in (ours, running_btf)]
    print(f"bpftool format c: {len(text[0])} bytes, textually identical: {text[0] == text[1]}")


def test_the_comparison_sees_a_one_member_change(running_graph, running_btf, tmp_path):
    """The oracle fails on wrong input: move one member of task_struct by a byte."""
    tid = next(i for i, t in running_graph.named() if t.name == "task_struct")
    t = running_graph.types[tid]
    old = t.members[3].bit_offset
    t.members[3].bit_offset += 8
    try:
        bad = tmp_path / "bad.btf"
        bad.write_bytes(emit(running_graph).data)
    finally:
        t.members[3].bit_offset = old
    diff = by_name_diff(canonical(str(bad)), canonical(running_btf))
    assert list(diff) == [("struct", "task_struct")]
    assert c_blocks(str(bad)) != c_blocks(running_btf)


def test_kernel_accepts_ours_and_rejects_a_damaged_copy(ours, loader, tmp_path):
    got = btf_load(loader, ours)
    assert got["loaded"], got
    # damage: the first struct's first member points at a type id past the end
    data = bytearray(open(ours, "rb").read())
    hdr_len, type_off = struct.unpack_from("<II", data, 4)[0], struct.unpack_from("<I", data, 8)[0]
    pos = hdr_len + type_off
    g = read_btf(bytes(data))
    tid = next(i for i, t in enumerate(g.types) if t.kind == M.STRUCT and t.members)
    pos = _record_offset(bytes(data), tid)
    struct.pack_into("<I", data, pos + 12 + 4, 0x7FFFFF)
    bad = tmp_path / "bad.btf"
    bad.write_bytes(bytes(data))
    got = btf_load(loader, str(bad))
    assert not got["loaded"] and got["errno"] == 22, got     # EINVAL, with the kernel's log
    assert "Invalid" in got["log"] or "invalid" in got["log"], got["log"][-500:]


def _record_offset(data: bytes, tid: int) -> int:
    """Byte offset of BTF type `tid`'s record (walking the records, little-endian)."""
    hdr_len, type_off, type_len = struct.unpack_from("<III", data, 4)
    pos, end, i = hdr_len + type_off, hdr_len + type_off + type_len, 1
    extra = {K.INT: lambda v: 4, K.ARRAY: lambda v: 12, K.STRUCT: lambda v: 12 * v,
             K.UNION: lambda v: 12 * v, K.ENUM: lambda v: 8 * v, K.FUNC_PROTO: lambda v: 8 * v,
             K.VAR: lambda v: 4, K.DATASEC: lambda v: 12 * v, K.DECL_TAG: lambda v: 4,
             K.ENUM64: lambda v: 12 * v}
    while pos < end:
        if i == tid:
            return pos
        info = struct.unpack_from("<I", data, pos + 4)[0]
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        pos += 12 + extra.get(kind, lambda v: 0)(vlen)
        i += 1
    raise AssertionError(tid)


def test_big_endian_output(running_graph, ours, tmp_path):
    """A big-endian target: bpftool (libbpf reads either byte order) sees the same graph,
    and so does our reader."""
    big = emit(running_graph, byteorder="big").data
    assert struct.unpack_from(">H", big, 0)[0] == K.MAGIC
    assert big != open(ours, "rb").read()
    path = tmp_path / "big.btf"
    path.write_bytes(big)
    _assert_same_graph(str(path), ours)
    assert len(read_btf(big).types) == len(running_graph.types)


PROFILES = {
    # profile -> kinds it must not contain
    "libbpf-0.5": {"DECL_TAG", "TYPE_TAG", "ENUM64"},
    "libbpf-1.0": set(),
    "kernel-5.15": {"DECL_TAG", "TYPE_TAG", "ENUM64"},
    "kernel-5.10": {"DECL_TAG", "TYPE_TAG", "ENUM64", "FLOAT"},
    "kernel-5.4": {"DECL_TAG", "TYPE_TAG", "ENUM64", "FLOAT"},
    "kernel-5.1": {"DECL_TAG", "TYPE_TAG", "ENUM64", "FLOAT", "VAR", "DATASEC"},
    "kernel-4.19": {"DECL_TAG", "TYPE_TAG", "ENUM64", "FLOAT", "VAR", "DATASEC", "FUNC",
                    "FUNC_PROTO"},
}


def _layouts(g: M.TypeGraph, full_width_plain: bool = False) -> collections.Counter:
    """Every named struct/union as (name, size, members by name/offset/width/type text).
    full_width_plain: a bitfield as wide as its type counts as a plain member (BTF
    without kind_flag has no way to say otherwise)."""
    spell = g.spelling_cache()

    def width(m):
        if full_width_plain and m.bit_size == 8 * (g.sizeof(m.type) or 0):
            return 0
        return m.bit_size
    return collections.Counter(
        (t.kind, t.name, t.size, tuple((m.name, m.bit_offset, width(m), spell(m.type))
                                       for m in t.members or ()))
        for _, t in g.named() if t.size is not None)


@pytest.fixture(scope="module")
def running_layouts(running_graph) -> dict:
    return {plain: _layouts(running_graph, plain) for plain in (False, True)}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_keeps_to_its_kinds_and_every_layout(name, running_graph, running_layouts,
                                                     loader, tmp_path):
    out = emit(running_graph, name)
    path = tmp_path / f"{name}.btf"
    path.write_bytes(out.data)
    raw = subprocess.run(["bpftool", "btf", "dump", "file", str(path)], check=True,
                         capture_output=True, text=True).stdout
    kinds = collections.Counter(m.group(1) for m in re.finditer(r"^\[\d+\] (\w+) ", raw,
                                                                re.MULTILINE))
    assert kinds["STRUCT"] > 10000
    assert not (set(kinds) & PROFILES[name]), (name, set(kinds) & PROFILES[name])
    assert out.notes or name == "libbpf-1.0", name
    prof = P.profile(name)
    if not prof.kind_flag:
        assert "bitfield_size=" not in raw          # old-style bitfields: their own INTs
    if not prof.enum_signed:
        assert not any(" ENUM " in ln and "encoding=SIGNED" in ln for ln in raw.splitlines())
    if not prof.func_global:
        assert not any(" FUNC " in ln and "linkage=global" in ln for ln in raw.splitlines())
    # every struct layout survives (bitfields read back from old-style INTs too); types
    # only change where the profile said so (floats, tags, function pointers)
    back = read_btf(out.data)
    plain = not prof.kind_flag
    if prof.float and prof.type_tag and prof.func:
        assert _layouts(back, plain) == running_layouts[plain]
    else:
        strip = {(k, n, s, tuple(x[:3] for x in ms)) for k, n, s, ms in _layouts(back, plain)}
        assert strip == {(k, n, s, tuple(x[:3] for x in ms))
                         for k, n, s, ms in running_layouts[plain]}
    assert btf_load(loader, str(path))["loaded"]       # a newer kernel takes older BTF


def test_unknown_and_unusable_profiles():
    from dbhive.errors import InputError
    for bad in ("libbpf-0.4", "kernel-4.14", "pahole", "kernel-5"):
        with pytest.raises(InputError):
            P.profile(bad)


def test_dedup_merges_a_duplicated_kernel_back(running_graph):
    """The kernel's graph followed by a second copy of itself (every reference shifted, so
    the copy points into itself, cycles included): dedup gives back one of each."""
    g = running_graph
    n = len(g.types)
    dup = M.TypeGraph(types=list(g.types), functions=list(g.functions), source="btf")
    shift = [0] + [i + n - 1 for i in range(1, n)]
    dup.types.extend(D._copy(t, shift) for t in g.types[1:])
    out, new_id = D.dedup(dup)
    assert len(out.types) == n
    assert all(new_id[i] == new_id[i + n - 1] for i in range(1, n))
    assert _layouts(out) == _layouts(g)


def test_dedup_keeps_same_name_layouts_apart_and_resolves_forwards(running_graph):
    g = running_graph
    by_name = collections.Counter((t.kind, t.name) for _, t in g.named() if t.size)
    assert any(c > 1 for c in by_name.values())      # the kernel has some
    assert D.dedup_count(g) == 0                     # already deduplicated by pahole/libbpf
    # a forward declaration of a struct that has one definition resolves to it
    g2 = M.TypeGraph(types=list(g.types), source="btf")
    tid = next(i for i, t in g.named() if t.name == "task_struct")
    fwd = g2.add(M.Type(M.FWD, "task_struct", encoding=M.STRUCT))
    ptr = g2.add(M.Type(M.PTR, ref=fwd))
    out, new_id = D.dedup(g2)
    assert out.types[new_id[ptr]].ref == new_id[tid]
    assert new_id[fwd] == new_id[tid]


def test_dedup_refuses_a_by_value_cycle():
    from dbhive.errors import CorruptDB
    g = M.TypeGraph()
    a = g.add(M.Type(M.STRUCT, "a", 8, members=[M.Member("b", 2, 0)]))
    g.add(M.Type(M.STRUCT, "b", 8, members=[M.Member("a", a, 0)]))
    with pytest.raises(CorruptDB, match="type id"):
        D.dedup(g)
