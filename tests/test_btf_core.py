"""CO-RE for real, on this kernel: three libbpf programs (data/core-src, clang 14 and 16,
compiled against a vmlinux.h that bpftool made from *our* BTF) loaded by a small libbpf
loader with btf_custom_path = our BTF, our minimal BTF, bpftool's minimal BTF, or nothing
(the kernel's own BTF).  libbpf's own account of every relocation it applied, the
instructions it produced, and the values the running programs read must agree -- and the
values must be what user space knows (pid, uid, ports, TLS base, ...).  Our relocation
engine must compute the value libbpf patched, relocation by relocation."""
from __future__ import annotations

import subprocess

import pytest

from dbhive import schema
from dbhive.btf import core as C
from dbhive.btf import ext as E
from dbhive.btf import make
from dbhive.btf.dbview import DbView
from tests.support import need_tool
from tests.support.minihive import DBHIVE
from tests.support.btf_compare import canonical
from tests.support.btfout import (PROGRAMS, TRIGGER, comparable, core_fixtures, dwarf_hive,
                                  hive_files, our_full_btf, relocations, run_loader,
                                  vmlinux_without_btf)


@pytest.fixture(scope="module")
def ours(running_db, tmp_path_factory) -> str:
    """Our full BTF of this kernel, made from its DB."""
    return our_full_btf(running_db, str(tmp_path_factory.mktemp("core") / "ours.btf"))


@pytest.fixture(scope="module")
def fx(ours) -> dict:
    need_tool("clang")
    need_tool("clang-16")
    return core_fixtures(ours)


def _run(fx, name, btf=None, attach=True):
    return run_loader(fx["core_loader"], fx[name], btf, TRIGGER[name], attach)


def _same(fx, name, btf=None, attach=True):
    """comparable() of a run against `btf` (None: the kernel's own)."""
    return comparable(name, _run(fx, name, btf, attach), btf or "/sys/kernel/btf/vmlinux",
                      fx[name])


def test_vmlinux_h_from_our_btf_is_the_kernels(fx, running_btf):
    theirs = subprocess.run(["bpftool", "btf", "dump", "file", running_btf, "format", "c"],
                            check=True, capture_output=True, text=True).stdout
    with open(fx["vmlinux.h"]) as fh:
        assert fh.read() == theirs


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_runs_the_same_with_our_btf(fx, ours, running_btf, name):
    own = _same(fx, name)
    mine = _same(fx, name, ours)
    assert own["hits"] == mine["hits"] == 1
    assert mine == own
    assert len(own["relocations"]) >= 15
    if name == "core_task":              # comm, read through CO-RE, is the loader's
        v = _run(fx, name, ours)
        comm = (v["values"][5].to_bytes(8, "little") + v["values"][6].to_bytes(8, "little"))
        assert comm.rstrip(b"\0").decode() == v["truth"]["comm"]


@pytest.mark.parametrize("name", PROGRAMS)
def test_our_relocation_engine_computes_what_libbpf_patched(fx, ours, running_db, name):
    libbpf = relocations(_run(fx, name, ours, attach=False))
    obj = E.read_object(fx[name])
    assert len(obj.relos) == len(libbpf)
    with DbView(running_db) as view:
        for i, relo in enumerate(obj.relos):
            r = C.relocate(obj, relo, view)
            if libbpf[i][0] == "poison":
                assert r.poisoned, (i, relo)
            else:
                assert r.value == libbpf[i][1], (i, relo, r.value, libbpf[i])
    kinds = {r.kind_name for r in obj.relos}
    if name == "core_kinds":             # every kind but the field ones of the others
        assert {"type_exists", "type_size", "type_matches", "type_id_target",
                "type_id_local", "enumval_exists", "enumval_value", "field_signed",
                "field_lshift_u64", "field_rshift_u64", "field_exists"} <= kinds


OBJECT_SETS = [("core_task",), ("core_sock",), ("core_kinds",), PROGRAMS]


def _minimal_both(db: str, full_btf: str, objs: list, tmp_path) -> tuple:
    """(ours, bpftool's, our result) minimal BTF files for `objs`: ours from the DB,
    bpftool's from the kernel's full BTF."""
    k = make.Kernel(schema.read_meta(db), db=db)
    out = make.minimal_btf(k, [E.read_object(p) for p in objs])
    mine = tmp_path / "ours.min.btf"
    mine.write_bytes(out.emitted.data)
    theirs = tmp_path / "bpftool.min.btf"
    subprocess.run(["bpftool", "gen", "min_core_btf", full_btf, str(theirs)] + objs,
                   check=True, capture_output=True)
    return mine, theirs, out


@pytest.mark.parametrize("names", OBJECT_SETS, ids=["+".join(n) for n in OBJECT_SETS])
def test_minimal_btf_like_bpftool_and_no_larger(fx, ours, running_db, running_btf, names,
                                                 tmp_path):
    need_tool("bpftool")
    objs = [fx[n] for n in names]
    mine, theirs, out = _minimal_both(running_db, running_btf, objs, tmp_path)
    a, b = canonical(str(mine)), canonical(str(theirs))
    assert set(a.named) == set(b.named)
    print(f"{'+'.join(names)}: ours {mine.stat().st_size} bytes, bpftool "
          f"{theirs.stat().st_size} bytes, {len(a.named)} definitions; relocations "
          f"{out.relocations['satisfied']}/{out.relocations['total']} satisfied; "
          f"{out.seconds * 1000:.0f} ms")
    assert mine.stat().st_size <= theirs.stat().st_size
    assert out.seconds < 5
    for n in names:
        full = _same(fx, n, ours)
        assert _same(fx, n, str(mine)) == full
        assert _same(fx, n, str(theirs)) == full


def test_a_minimal_btf_missing_a_member_relocates_differently(fx, ours, running_db, tmp_path):
    """The comparison catches a minimal BTF that lost what a relocation needs."""
    from dbhive.btf import minimal
    from dbhive.btf.emit import emit
    obj = E.read_object(fx["core_task"])
    with DbView(running_db) as view:
        sel = minimal.select([obj], view)
        tid = next(t for t in sel.members if view.type(t).name == "task_struct")
        sel.members[tid] = {i for i in sel.members[tid]
                            if view.type(tid).members[i].name != "tgid"}
        g = minimal.subgraph(sel, view)
    bad = tmp_path / "bad.min.btf"
    bad.write_bytes(emit(g).data)
    res = _run(fx, "core_task", str(bad))
    good = _same(fx, "core_task", ours)
    assert not res["loaded"] or relocations(res) != good["relocations"]


@pytest.mark.slow
def test_dwarf_kernel_minimal_btf_relocates_like_its_own_btf(fx, debian_vmlinux,
                                                             debian_vmlinux_btf, tmp_path):
    """The Debian 6.1 kernel (DWARF DB, its .BTF hidden): our minimal BTF and bpftool's of
    its own .BTF give libbpf the same relocations as its own full .BTF and as our full BTF
    (loaded, not attached: the offsets are 6.1's, this kernel is 6.18)."""
    db, our_full = hive_files(dwarf_hive(vmlinux_without_btf(debian_vmlinux)))
    objs = [fx[n] for n in PROGRAMS]
    mine, theirs, _ = _minimal_both(db, debian_vmlinux_btf, objs, tmp_path)
    assert set(canonical(str(mine)).named) == set(canonical(str(theirs)).named)
    assert mine.stat().st_size <= theirs.stat().st_size
    for n in PROGRAMS:
        want = _same(fx, n, debian_vmlinux_btf, attach=False)
        assert want["relocations"] != _same(fx, n, attach=False)["relocations"]   # 6.1 != 6.18
        for btf in (our_full, str(mine), str(theirs)):
            assert _same(fx, n, btf, attach=False) == want, (n, btf)


def test_minimal_btf_of_a_damaged_db_is_one_line(fx, tmp_path):
    """The minimal BTF reads the DB on demand (DbView): pages of garbage over its type
    tables are a one-line error naming the file, and no output is left."""
    from scripts import make_hostile_inputs
    from tests.support.bounded import run_bounded
    db = make_hostile_inputs.build()["db-damaged-type-tables"]
    out = tmp_path / "min.btf"
    o = run_bounded([DBHIVE, "btf", db, "--for", fx["core_task"], "-o", str(out)])
    assert o.returncode != 0 and o.one_line_error and db in o.stderr, o.stderr
    assert "damaged" in o.stderr and not out.exists()
