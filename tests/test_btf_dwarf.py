"""DWARF-only kernel -> DB -> BTF: the Debian 6.1 vmlinux with its .BTF hidden, built by
`dbhive build --with-btf`, against (a) that vmlinux's own .BTF and (b) `pahole
--btf_encode_detached` of the same file, both read by bpftool (tests/support/btf_compare).

Every struct/union/enum/typedef/fwd definition must be equal.  The one pahole 1.24 quirk
that shows in BTF is allowed for and counted: pahole flattens multi-dimensional arrays
(`m[2][3]` -> one ARRAY of 6; ours keeps ARRAY of ARRAY, as the DWARF says), so
definitions are compared with arrays flattened, and the number of definitions that differ
only by that is printed.  Functions: every function pahole emits must be in ours with the
same prototype; ours has more (pahole 1.24 keeps only functions ftrace can attach to,
CO-RE needs types, not its selection), counted and shown.  pahole's per-CPU VARs are not
in ours (the DWARF reader does not read variables), counted and shown."""
from __future__ import annotations

import os
import tarfile

import pytest

from dbhive import schema
from tests.support.btf_compare import by_name_diff, canonical, compare, summary
from tests.support.btfout import (btf_load, core_fixtures, dwarf_hive, hive_files,
                                  pahole_detached, vmlinux_without_btf)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(debian_vmlinux) -> tuple:
    """(DB, emitted BTF, hive) of the Debian kernel built from DWARF only."""
    h = dwarf_hive(vmlinux_without_btf(debian_vmlinux))
    db, btf = hive_files(h)
    return db, btf, h


@pytest.fixture(scope="module")
def views(built, debian_vmlinux_btf, debian_vmlinux) -> dict:
    pahole = pahole_detached(debian_vmlinux)
    return {name: canonical(path, flatten_arrays=True, func_linkage=False)
            for name, path in (("ours", built[1]), ("own", debian_vmlinux_btf),
                               ("pahole", pahole))}


def test_the_build_saw_no_btf_and_says_which_btf_it_wrote(built):
    db, btf, hive = built
    meta = schema.read_meta(db)
    assert meta["type_source"] == "dwarf" and meta["has_btf"] == "0"
    assert meta["btf_origin"] == "emitted"
    assert meta["btf_emitted_by"] == f"dbhive {meta['builder_version']}"
    assert meta["btf_file"] == os.path.relpath(btf, hive)
    import hashlib
    with open(btf, "rb") as fh:
        data = fh.read()
    assert meta["btf_sha256"] == hashlib.sha256(data).hexdigest()
    with tarfile.open(btf[:-4] + ".btf.tar.xz") as tar:          # btfhub's shape
        (member,) = tar.getmembers()
        assert member.name == os.path.basename(btf)
        assert tar.extractfile(member).read() == data


@pytest.mark.parametrize("anchor", ["own", "pahole"])
def test_every_definition_equals_the_anchor(views, anchor):
    ours, other = views["ours"], views[anchor]
    diff = by_name_diff(ours, other)
    shown = {k: (a[:1], b[:1]) for k, (a, b) in list(diff.items())[:3]}
    assert diff == {}, f"{len(diff)} names differ, e.g. {shown}"
    assert sum(ours.named.values()) >= 10000
    print(f"vs {anchor}: {sum(ours.named.values())} definitions equal")


def test_only_multi_dimensional_arrays_differ_unflattened(built, debian_vmlinux_btf):
    ours = canonical(built[1], func_linkage=False)
    own = canonical(debian_vmlinux_btf, func_linkage=False)
    diff = by_name_diff(ours, own)
    assert diff, "the 6.1 kernel has multi-dimensional arrays"
    for key, (a, b) in diff.items():
        assert any("] [" in d for d in a), (key, a[:1], b[:1])   # ours: [n] [m] T
    print(f"pahole quirk: {len(diff)} definitions differ only by flattened arrays, e.g. "
          f"{sorted(diff)[:3]}")


@pytest.mark.parametrize("anchor", ["own", "pahole"])
def test_functions_cover_the_anchors(views, anchor):
    ours, other = views["ours"], views[anchor]
    only_ours, only_theirs = ours.funcs - other.funcs, other.funcs - ours.funcs
    names_ours = set(ours.func_protos)
    missing = sorted(k.split()[0] for k in only_theirs)
    other_proto = sorted(n for n in missing if n in names_ours)
    print(f"functions vs {anchor}: ours {sum(ours.funcs.values())}, theirs "
          f"{sum(other.funcs.values())}; only ours {sum(only_ours.values())} (e.g. "
          f"{sorted(k.split()[0] for k in only_ours)[:5]}), only theirs "
          f"{sum(only_theirs.values())} ({missing[:5]}; of them {len(other_proto)} present "
          f"with another prototype)")
    assert not only_theirs, missing[:20]
    vars_missing = sum(other.vars.values()) - sum(ours.vars.values())
    print(f"per-CPU variables in {anchor} and not in ours: {vars_missing}")


def test_size_within_five_percent_of_pahole(built, debian_vmlinux):
    ours = os.path.getsize(built[1])
    pahole = os.path.getsize(pahole_detached(debian_vmlinux))
    print(f"size: ours {ours} bytes, pahole {pahole} bytes ({ours / pahole - 1:+.2%})")
    assert abs(ours - pahole) <= 0.05 * pahole


def test_kernel_accepts_the_dwarf_made_btf(built, running_db, tmp_path):
    from dbhive.btf.make import Kernel, full_btf
    mine = tmp_path / "running.btf"
    mine.write_bytes(full_btf(Kernel(schema.read_meta(running_db), db=running_db))
                     .emitted.data)
    loader = core_fixtures(str(mine))["core_loader"]
    got = btf_load(loader, built[1])
    assert got["loaded"], got


def test_dedup_found_nothing_left_to_merge(built):
    """The DWARF reader's interning already leaves one type per shape; dedup agrees."""
    from dbhive import store
    from dbhive.btf.dedup import dedup_count
    assert dedup_count(store.load_graph(built[0])) == 0


def test_compare_sees_a_wrong_layout(views, built, tmp_path):
    """The comparison is not blind: one member moved in ours is the one difference."""
    from dbhive import store
    from dbhive.btf.emit import emit
    g = store.load_graph(built[0])
    tid = next(i for i, t in g.named() if t.name == "sock_common")
    g.types[tid].members[-1].bit_offset += 8
    bad = tmp_path / "bad.btf"
    bad.write_bytes(emit(g).data)
    diff = by_name_diff(canonical(str(bad), flatten_arrays=True, func_linkage=False),
                        views["pahole"])
    assert list(diff) == [("struct", "sock_common")]
    assert compare(views["ours"], views["pahole"])["named"] == (
        compare(views["ours"], views["ours"])["named"]), summary(compare(views["ours"],
                                                                         views["pahole"]))
