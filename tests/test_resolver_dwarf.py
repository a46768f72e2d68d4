"""The resolver on a DB built from DWARF (the Debian 6.1 vmlinux, `dbhive build --source
dwarf`), against `pahole -F dwarf` and the real surftrace client.  Slow: the build takes
about a minute and pahole a few GB the first time (both cached)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scripts.realdata import CACHE, DEBIAN_RELEASE
from tests.support import need_tool
from resolver import Resolver
from resolver.expr import translate
from tests.support.resolver_dbs import PaholeOffsets, _key
from tests.support.surftrace_client import CONTRACT, MORE, surftrace_show
from tests.support.offset_oracle import PATHS, check_paths as _check

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dwarf_db(debian_vmlinux):
    d = os.path.join(CACHE, "resolver-dbs")
    os.makedirs(d, exist_ok=True)
    dest = os.path.join(d, f"dwarf-{_key(debian_vmlinux, 'dwarf')}.db")
    if not os.path.exists(dest):
        dbhive = os.path.join(os.path.dirname(sys.executable), "dbhive")
        subprocess.run([dbhive, "build", debian_vmlinux, "--source", "dwarf", "--out", dest,
                        "--no-progress"], check=True, capture_output=True, timeout=1800)
    return dest


def test_dwarf_db_offsets_equal_pahole(dwarf_db, debian_vmlinux, debian_vmlinux_btf):
    need_tool("pahole")
    oracle = PaholeOffsets(debian_vmlinux, "dwarf", debian_vmlinux_btf)
    with Resolver.open(db=dwarf_db, overlay=None) as r:
        assert r.db.meta["type_source"] == "dwarf"
        assert r.kernel["release"] == DEBIAN_RELEASE and r.kernel["build_id"]
        present, absent, bitfields = _check(r, oracle, PATHS)
    assert present >= 50 and bitfields >= 4, (present, absent, bitfields)


def test_several_layouts_are_reported_and_the_first_is_used(dwarf_db, debian_vmlinux,
                                                            debian_vmlinux_btf):
    """DWARF keeps same-named structs of different CUs (e.g. three `struct irq_info`)."""
    oracle = PaholeOffsets(debian_vmlinux, "dwarf", debian_vmlinux_btf)
    with Resolver.open(db=dwarf_db, overlay=None) as r:
        multi = [k for k, v in oracle.layouts.items()
                 if len({(l.size, tuple((m.path, m.offset) for m in l.members)) for l in v}) > 1]
        assert multi
        for key in multi[:20]:
            s = r.struct(key)
            assert s.layouts > 1, key
            first = oracle.layouts[key][0]
            assert s.size == first.size, key
            m = first.members[-1]
            o = r.offset(f"{key}.{m.path}")
            assert o.offset == m.offset and "layouts" in (o.note or ""), key


def test_dwarf_db_expr_equals_surftrace_client(dwarf_db, tmp_path):
    exprs = CONTRACT + MORE
    theirs = surftrace_show(dwarf_db, exprs, tmp_path)
    with Resolver.open(db=dwarf_db, overlay=None) as r:
        ours = [p.surftrace_dict() for p in translate(r, exprs, compat=True)]
    assert ours == theirs
