"""The C BTF parser (dbhive/btf/_cbtf.c) against the Python one (dbhive/btf/reader.py, the
reference): the same graph from real kernels' BTF, and on damaged copies either the same graph
or a refusal exactly where the Python parser raises (whose error the reader then gives)."""
from __future__ import annotations

import dataclasses
import random
import struct

import pytest

from dbhive import model as M
from dbhive.btf import kinds as K
from dbhive.btf import reader
from dbhive.errors import DbhiveError

pytestmark = pytest.mark.skipif(reader._c is None, reason="the C BTF parser is not built")


def c_graph(data: bytes):
    return reader._c_parse(data, reader._layout(data, "test"))


def py_graph(data: bytes):
    with M.gc_paused():
        return reader._parser(data, "test", None).parse()


def same(a: M.TypeGraph, b: M.TypeGraph) -> bool:
    """Every object of the two graphs equal, field by field (kinds by identity too)."""
    return (a.types == b.types and a.functions == b.functions and a.variables == b.variables
            and a.datasecs == b.datasecs and a.decl_tags == b.decl_tags
            and all(x.kind is y.kind for x, y in zip(a.types, b.types)))


def records(data: bytes) -> list:
    """(offset, kind, vlen) of every type record of a little-endian BTF."""
    hdr_len, type_off, type_len = struct.unpack_from("<III", data, 4)
    pos, end, out = hdr_len + type_off, hdr_len + type_off + type_len, []
    fixed = {K.INT: 4, K.ARRAY: 12, K.VAR: 4, K.DECL_TAG: 4}
    per = {K.STRUCT: 12, K.UNION: 12, K.ENUM: 8, K.ENUM64: 12, K.FUNC_PROTO: 8, K.DATASEC: 12}
    while pos < end:
        info = struct.unpack_from("<I", data, pos + 4)[0]
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        out.append((pos, kind, vlen))
        pos += 12 + fixed.get(kind, 0) + per.get(kind, 0) * vlen
    return out


def damaged(data: bytes, rng: random.Random, recs: list) -> bytes:
    """A copy of `data` with one record changed the way damage or a crafted file would."""
    b = bytearray(data)
    hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, 4)
    pos, kind, vlen = rng.choice(recs)
    words = 3 + {K.INT: 1, K.ARRAY: 3, K.VAR: 1, K.DECL_TAG: 1}.get(kind, 0) + \
        {K.STRUCT: 3, K.UNION: 3, K.ENUM: 2, K.ENUM64: 3, K.FUNC_PROTO: 2,
         K.DATASEC: 3}.get(kind, 0) * vlen
    word = pos + 4 * rng.randrange(words)
    how = rng.randrange(8)
    if how == 0:                                  # a reference to itself, or nearby
        rid = recs.index((pos, kind, vlen)) + 1
        value = rid + rng.choice((0, 0, 1, -1))
    elif how == 1:                                # an id past the end, or the last
        value = len(recs) + rng.choice((0, 1, 1000))
    elif how == 2:                                # a string offset: the end, past it, inside
        value = rng.choice((str_len, str_len + 5, rng.randrange(1, max(2, str_len))))
    elif how == 3:                                # the info word: kind, vlen, kind_flag
        word = pos + 4
        info = struct.unpack_from("<I", b, word)[0]
        value = info ^ (1 << rng.choice((24, 25, 26, 27, 28, 31, 0, 1, 3, 15)))
    elif how == 4:                                # the type section cut short
        struct.pack_into("<I", b, 12, max(0, type_len - rng.randrange(1, 64)))
        return bytes(b)
    elif how == 5:                                # a string section without its last NUL
        struct.pack_into("<I", b, 20, max(0, str_len - rng.randrange(1, 3)))
        return bytes(b)
    else:                                         # any value
        value = rng.getrandbits(rng.choice((2, 8, 16, 32)))
    struct.pack_into("<I", b, word, value & 0xFFFFFFFF)
    return bytes(b)


def test_real_kernels_same_graph(running_btf, debian_vmlinux_btf):
    tags = 0
    for path in (running_btf, debian_vmlinux_btf):
        data = open(path, "rb").read()
        c, p = c_graph(data), py_graph(data)
        assert c is not None, path
        assert same(c, p), path
        assert len(c.types) > 50000 and c.datasecs and c.variables
        tags += len(c.decl_tags)
        # what the C path leaves out, the graph checks, holds of its graph
        M.check_references(c, path)
    assert tags                         # the running kernel's has DECL_TAGs (6.1's none)


def test_the_comparison_sees_one_changed_field(running_btf):
    data = open(running_btf, "rb").read()
    c, p = c_graph(data), py_graph(data)
    tid = next(i for i, t in enumerate(c.types) if t.members and len(t.members) > 3)
    m = c.types[tid].members[2]
    c.types[tid].members[2] = dataclasses.replace(m, bit_offset=m.bit_offset + 8)
    assert not same(c, p)


def _outcomes(data: bytes, cases: int, seed: int) -> dict:
    rng = random.Random(seed)
    recs = records(data)
    seen = {"equal": 0, "refused": 0}
    for i in range(cases):
        bad = damaged(data, rng, recs)
        c = c_graph(bad)
        try:
            p = py_graph(bad)
        except DbhiveError:
            # the Python parser refuses it: so must the C parser
            assert c is None, f"case {i}: C parsed what Python refuses"
            seen["refused"] += 1
            continue
        assert c is not None, f"case {i}: C refused what Python parses"
        assert same(c, p), f"case {i}: different graphs"
        seen["equal"] += 1
    return seen


def test_damaged_small_btf(tmp_path):
    """Hundreds of damaged copies of pahole's BTF of the generated real objects."""
    import subprocess
    from scripts import make_dwarf_fixtures
    fx = make_dwarf_fixtures.build()
    total = {"equal": 0, "refused": 0}
    for k in ("user-dwarf4", "user-dwarf5", "user-clang5"):
        out = tmp_path / f"{k}.btf"
        subprocess.run(["pahole", "--btf_encode_detached", str(out), fx[k]], check=True,
                       capture_output=True)
        data = out.read_bytes()
        assert same(c_graph(data), py_graph(data))
        for k2, v in _outcomes(data, 300, seed=len(k)).items():
            total[k2] += v
    # both outcomes are met, often
    assert total["equal"] > 100 and total["refused"] > 100, total


def test_damaged_kernel_btf(running_btf):
    """Damaged copies of a whole kernel's BTF: every kind it has, DECL_TAG and DATASEC too."""
    data = open(running_btf, "rb").read()
    seen = _outcomes(data, 25, seed=7)
    assert seen["equal"] and seen["refused"], seen


def test_errors_are_the_python_parsers(running_btf, monkeypatch):
    """read_btf on a refused input raises what the pure-Python reader raises."""
    data = bytearray(open(running_btf, "rb").read())
    recs = records(bytes(data))
    # a typedef naming itself: a cycle
    pos = next(p for p, k, _ in recs if k == K.TYPEDEF)
    struct.pack_into("<I", data, pos + 8, recs.index(next(r for r in recs if r[0] == pos)) + 1)
    assert c_graph(bytes(data)) is None
    with pytest.raises(M.TypeCycle) as c_err:
        reader.read_btf(bytes(data), "t")
    monkeypatch.setenv("DBHIVE_BTF_PURE", "1")
    assert not reader.c_enabled()
    with pytest.raises(M.TypeCycle) as py_err:
        reader.read_btf(bytes(data), "t")
    assert str(c_err.value) == str(py_err.value)
