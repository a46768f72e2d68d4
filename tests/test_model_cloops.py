"""The DB writer's C loops over the model (dbhive/_cmodel.c) against the Python code (the
reference): model._speller's spelling of every type and surftrace's flattened struct members,
the same on real graphs (BTF, DWARF, a graph loaded back from a DB), and on damaged graphs
either the same or a refusal exactly where the Python code raises."""
from __future__ import annotations

import copy
import dataclasses
import random

import pytest

from dbhive import model as M
from dbhive import surftrace

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


def py_flat(g: M.TypeGraph, spelled: list):
    """surftrace.struct_rows in Python, or the exception it raises."""
    try:
        return surftrace.struct_rows(g, spelled.__getitem__)
    except Exception as e:          # noqa: BLE001
        return e


def hold_together(cases: int, make_bad, python, c) -> dict:
    """`cases` damaged graphs from make_bad(): where `python` raises (returns the exception)
    `c` must refuse (None), else the two must be equal; `python` returning None skips a case.
    How many of each were met."""
    seen = {"equal": 0, "refused": 0}
    for i in range(cases):
        bad = make_bad()
        want = python(bad)
        if want is None:
            continue
        got = c(bad)
        if isinstance(want, Exception):
            assert got is None, f"case {i}: C did what Python refuses ({want!r})"
            seen["refused"] += 1
        else:
            assert got == want, f"case {i}: C refused or differs"
            seen["equal"] += 1
    return seen


@pytest.fixture(scope="module")
def real_graphs(running_btf, debian_vmlinux_btf, running_db):
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
    return graphs


def test_flattening_of_real_graphs(real_graphs):
    bitfields = anonymous = 0
    for g in real_graphs:
        spelled = M.spell_all(g)
        rows = surftrace.c_struct_rows(g, spelled)
        assert rows is not None
        assert rows == py_flat(g, spelled)
        bitfields += sum(1 for r in rows[1] if r[5])
        anonymous += sum(1 for r in rows[1] if "." in r[2])
    assert bitfields > 1000 and anonymous > 1000


def test_real_graphs(real_graphs):
    graphs = real_graphs
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


def cut(g: M.TypeGraph, n: int) -> M.TypeGraph:
    """A smaller graph, to keep the damaged cases quick: the first `n` types (copies), every
    reference beyond them made void."""
    small = M.TypeGraph(types=[dataclasses.replace(t) for t in g.types[:n]])
    for t in small.types:
        if t.ref is not None and t.ref >= n:
            t.ref = 0
        if t.params:
            t.params = [M.Param(p.name, p.type if p.type < n else 0) for p in t.params]
        if t.members:
            t.members = [M.Member(m.name, m.type if m.type < n else 0, m.bit_offset,
                                  m.bit_size) for m in t.members]
    return small


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
    small = cut(g, 3000)
    rng = random.Random(5)
    seen = hold_together(400, lambda: damage(small, rng), py_spellings,
                         lambda bad: M._c.spell_all(bad.types))
    assert seen["equal"] > 50 and seen["refused"] > 50, seen


def damage_members(g: M.TypeGraph, rng: random.Random) -> M.TypeGraph:
    """A copy of `g` with a few members or types changed as damaged input would."""
    g = copy.copy(g)
    g.types = list(g.types)
    n = len(g.types)
    composite = [i for i, t in enumerate(g.types) if t.members]
    for _ in range(rng.choice((1, 3))):
        tid = rng.choice(composite)
        t = g.types[tid] = dataclasses.replace(g.types[tid], members=list(g.types[tid].members))
        i = rng.randrange(len(t.members))
        m = t.members[i] = dataclasses.replace(t.members[i])
        how = rng.randrange(6)
        if how == 0:
            m.type = rng.choice((tid, rng.choice(composite)))  # itself, another struct
        elif how == 1:
            m.bit_size = rng.choice((0, 1, 3, 33, 64))
        elif how == 2:
            m.bit_offset = rng.choice((0, 7, 1 << 40, m.bit_offset + 1))
        elif how == 3:
            m.name = rng.choice((None, "", "y"))
        elif how == 4:                 # the member's type: another kind, size or length
            o = rng.randrange(1, n)
            g.types[o] = dataclasses.replace(g.types[o], size=rng.choice((None, 0, 3)),
                                             nelems=rng.choice((None, 0, 2)))
            m.type = o
        else:
            m.type = rng.randrange(n)
    return g


def test_flattening_of_damaged_graphs(running_btf):
    from dbhive.btf import read_btf
    g = read_btf(open(running_btf, "rb").read(), running_btf)
    small = cut(g, 4000)
    rng = random.Random(9)

    def python(bad):                # a graph whose spelling fails is not flattened
        sp = py_spellings(bad)
        return None if isinstance(sp, Exception) else py_flat(bad, sp)
    seen = hold_together(150, lambda: damage_members(small, rng), python,
                         lambda bad: surftrace.c_struct_rows(bad, py_spellings(bad)))
    assert seen["equal"] > 40 and seen["refused"] > 10, seen


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


def py_type_and_function_rows(g: M.TypeGraph, spelled: list):
    """surftrace's types and (files, funs) rows in Python, or the exception raised."""
    try:
        return (surftrace.type_rows(g, spelled.__getitem__),
                surftrace.function_rows(g, spelled.__getitem__, 0.5))
    except Exception as e:          # noqa: BLE001
        return e


def c_type_and_function_rows(g: M.TypeGraph, spelled: list):
    from json.encoder import encode_basestring_ascii
    types = M._c.type_rows(g.types, spelled, g.ptr_size)
    funs = M._c.function_rows(g.types, g.functions, spelled, encode_basestring_ascii, 0.5)
    return None if types is None or funs is None else (types, funs)


def test_type_and_function_rows_of_real_graphs(real_graphs):
    statics = variadic = files = 0
    for g in real_graphs:
        spelled = M.spell_all(g)
        got = c_type_and_function_rows(g, spelled)
        assert got is not None
        assert got == py_type_and_function_rows(g, spelled)
        types, (file_rows, funs) = got
        statics += sum(1 for f in funs if f[2].startswith("static "))
        variadic += sum(1 for f in funs if f[1].endswith('"..."]'))
        files += len(file_rows)
    assert statics > 100 and variadic > 10 and files >= 5


def with_functions(g: M.TypeGraph, rng: random.Random) -> M.TypeGraph:
    """`g` with a function for each of its prototypes, static or not, with or without a
    file, line and module."""
    protos = [i for i, t in enumerate(g.types) if t.kind == M.FUNC_PROTO]
    g.functions = [M.Function(f"f{i}", p, rng.random() < 0.3,
                              rng.choice((None, "", "a.c", "b/c.h", 'q"\\\u00e9.c')),
                              rng.choice((None, 0, 12)), rng.choice((None, "vm", "mod")))
                   for i, p in enumerate(protos)]
    return g


def damage_functions(g: M.TypeGraph, rng: random.Random) -> M.TypeGraph:
    """damage() to the types, and now and then a function pointed elsewhere."""
    g = damage(g, rng)
    g.functions = list(g.functions)
    for _ in range(rng.choice((0, 1, 3))):
        i = rng.randrange(len(g.functions))
        g.functions[i] = dataclasses.replace(
            g.functions[i], proto=rng.choice((0, len(g.types), rng.randrange(len(g.types)))),
            file=rng.choice((None, "x.c", 7, ["unhashable"])))
    return g


def test_type_and_function_rows_of_damaged_graphs(running_btf):
    from dbhive.btf import read_btf
    g = read_btf(open(running_btf, "rb").read(), running_btf)
    rng = random.Random(11)
    small = with_functions(cut(g, 3000), rng)
    assert len(small.functions) > 100

    def python(bad):
        sp = py_spellings(bad)
        return None if isinstance(sp, Exception) else py_type_and_function_rows(bad, sp)
    seen = hold_together(300, lambda: damage_functions(small, rng), python,
                         lambda bad: c_type_and_function_rows(bad, py_spellings(bad)))
    assert seen["equal"] > 50 and seen["refused"] > 10, seen


def test_the_comparison_sees_one_changed_row(running_btf):
    from dbhive.btf import read_btf
    g = read_btf(open(running_btf, "rb").read(), running_btf)
    spelled = M.spell_all(g)
    want = py_type_and_function_rows(g, spelled)
    f = g.functions[100]
    g.functions[100] = dataclasses.replace(f, static=not f.static)
    assert c_type_and_function_rows(g, spelled) != want
    g.functions[100] = f
    tid = next(i for i, t in enumerate(g.types) if t.kind == M.TYPEDEF)
    spelled = list(spelled)
    spelled[g.strip(tid)] += " "
    assert c_type_and_function_rows(g, spelled)[0] != want[0]


def py_checked(g: M.TypeGraph):
    """model.check_references by the Python code: True, or the exception it raises."""
    import os
    old = os.environ.get("DBHIVE_MODEL_PURE")
    os.environ["DBHIVE_MODEL_PURE"] = "1"
    try:
        M.check_references(g, "x")
        return True
    except Exception as e:          # noqa: BLE001
        return e
    finally:
        if old is None:
            del os.environ["DBHIVE_MODEL_PURE"]
        else:
            os.environ["DBHIVE_MODEL_PURE"] = old


def test_checking_of_real_graphs(real_graphs):
    for g in real_graphs:
        assert py_checked(g) is True
        assert M._c.check_types(g.types) is True


def test_checking_of_damaged_graphs(running_btf):
    """check_types (the type part of check_references in C) refuses exactly the graphs
    the Python code raises on: references past the end, cycles by value (a member of its
    own type) and by spelling (a pointer to itself)."""
    from dbhive.btf import read_btf
    g = read_btf(open(running_btf, "rb").read(), running_btf)
    small = cut(g, 3000)
    rng = random.Random(11)
    for make in (lambda: damage(small, rng), lambda: damage_members(small, rng)):
        seen = hold_together(300, make, py_checked, lambda bad: M._c.check_types(bad.types))
        assert seen["equal"] > 30 and seen["refused"] > 30, seen
