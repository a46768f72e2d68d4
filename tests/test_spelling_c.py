"""The C spelling loop (dbhive/_cmodel.c) against model._speller (the reference): the same
spelling of every type of real graphs (BTF, DWARF, a graph loaded back from a DB), and on
damaged graphs either the same spellings or a refusal exactly where _speller raises."""
from __future__ import annotations

import copy
import dataclasses
import random

import pytest

from dbhive import model as M

pytestmark = pytest.mark.skipif(M._c is None, reason="the C model loop is not built")

KINDS = (M.VOID, M.INT, M.FLOAT, M.PTR, M.ARRAY, M.STRUCT, M.UNION, M.ENUM, M.FWD, M.TYPEDEF,
         M.CONST, M.VOLATILE, M.RESTRICT, M.TYPE_TAG, M.FUNC_PROTO)


def py_spellings(g: M.TypeGraph):
    """_speller's spellings, or the exception it raises."""
    try:
        spell = M._speller(g)
        return [spell(tid) for tid in range(len(g.types))]
    except Exception as e:          # noqa: BLE001 - what it raises is what is compared
        return e


def test_real_graphs(running_btf, debian_vmlinux_btf, running_db):
    from dbhive.btf import read_btf
    from dbhive.dwarf import read_dwarf
    from dbhive.store import load_graph
    from scripts import make_dwarf_fixtures
    fx = make_dwarf_fixtures.build()
    graphs = [read_btf(open(p, "rb").read(), p) for p in (running_btf, debian_vmlinux_btf)]
    graphs.append(load_graph(running_db))           # kinds interned by the loader
    graphs += [read_dwarf(fx[k]) for k in ("user-dwarf4", "user-dwarf5", "user-clang5",
                                           "kmod-dwarf5") if k in fx]
    assert len(graphs) >= 6
    for g in graphs:
        got = M._c.spell_all(g.types)
        assert got is not None
        assert got == py_spellings(g)
    # every branch of the speller is met: pointers to functions and arrays, qualified
    # pointers, anonymous structs, variadic prototypes, forward declarations
    every = set().union(*(M._c.spell_all(g.types) for g in graphs[:2]))
    for part in ("(*)(", "(*)[", "*const", "struct {...}", ", ...)", "(void)"):
        assert any(part in s for s in every), part


def test_the_comparison_sees_one_changed_spelling(running_btf):
    from dbhive.btf import read_btf
    g = read_btf(open(running_btf, "rb").read(), running_btf)
    tid = next(i for i, t in enumerate(g.types) if t.kind == M.ARRAY and t.nelems)
    want = py_spellings(g)
    g.types[tid] = dataclasses.replace(g.types[tid], nelems=g.types[tid].nelems + 1)
    assert M._c.spell_all(g.types) != want


def damage(g: M.TypeGraph, rng: random.Random) -> M.TypeGraph:
    """A copy of `g` with a few types changed as damaged or crafted input would."""
    g = copy.copy(g)
    g.types = list(g.types)
    n = len(g.types)
    for _ in range(rng.choice((1, 3, 10))):
        tid = rng.randrange(1, n)
        t = dataclasses.replace(g.types[tid])
        how = rng.randrange(6)
        if how == 0:
            t.ref = tid                                     # itself: a cycle
        elif how == 1:
            t.ref = rng.choice((None, 0, n - 1, rng.randrange(n), n))
        elif how == 2:
            t.kind = rng.choice(KINDS)
        elif how == 3:
            t.params = [M.Param(None, rng.choice((tid, 0, rng.randrange(n))))]
        elif how == 4:
            t.nelems = rng.choice((None, 0, 7))
        else:
            t.name = rng.choice((None, "", "x"))
        g.types[tid] = t
    return g


def test_damaged_graphs(running_btf):
    from dbhive.btf import read_btf
    g = read_btf(open(running_btf, "rb").read(), running_btf)
    # a smaller graph keeps the cases quick: the first 3000 types, references beyond cut
    small = M.TypeGraph(types=[dataclasses.replace(t) for t in g.types[:3000]])
    for t in small.types:
        if t.ref is not None and t.ref >= 3000:
            t.ref = 0
        t.members = None                       # spelling reads no members
        if t.params:
            t.params = [M.Param(p.name, p.type if p.type < 3000 else 0) for p in t.params]
    rng = random.Random(5)
    seen = {"equal": 0, "refused": 0}
    for i in range(400):
        bad = damage(small, rng)
        want = py_spellings(bad)
        got = M._c.spell_all(bad.types)
        if isinstance(want, Exception):
            assert got is None, f"case {i}: C spelled what _speller refuses ({want!r})"
            seen["refused"] += 1
        else:
            assert got == want, f"case {i}"
            seen["equal"] += 1
    assert seen["equal"] > 50 and seen["refused"] > 50, seen


def test_spell_all_raises_what_the_speller_raises(monkeypatch):
    g = M.TypeGraph()
    g.types += [M.Type(M.PTR, ref=2), M.Type(M.CONST, ref=1)]      # ptr -> const -> ptr
    assert M._c.spell_all(g.types) is None
    with pytest.raises(M.TypeCycle) as c_err:
        M.spell_all(g)
    monkeypatch.setenv("DBHIVE_MODEL_PURE", "1")
    with pytest.raises(M.TypeCycle) as py_err:
        M.spell_all(g)
    assert str(c_err.value) == str(py_err.value)
    # a kind equal to the model's but not the model's own string: left to _speller
    g = M.TypeGraph()
    g.types.append(M.Type("".join(["p", "tr"]), ref=0))
    monkeypatch.delenv("DBHIVE_MODEL_PURE")
    assert M._c.spell_all(g.types) is None
    assert M.spell_all(g) == ["void", "void *"]
