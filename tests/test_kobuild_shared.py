"""kobuild's shared key tables (dbhive/modules/merge.py: SharedKeys, TypeMerger.add_delta)
change nothing: on real Debian 6.1 -dbg modules chosen so that every way a delta is refused
happens, the DB of modules read into shared tables, in one process and with two workers,
is the DB of each module's own keys merged one by one (`share=False`), row for row.

The modules (path order), and what they exercise:
  aegis128-aesni, aegis128      two drivers' own `struct aegis_state`: the second's pointers
                                need their own (scoped) layout: refused, "layout"
  ghash-clmulni-intel, libcurve25519-generic   two `typedef u128`s: "layout"
  ttyprintk, virtio_console     `struct console` / virtio_console's own `struct port`
  ib_core, bonding              both have bond_3ad.h's `struct port`, not virtio_console's:
                                ib_core is scoped, and bonding reaches ib_core's keys made
                                with its scoped placeholders: refused, "absent"
  zstd_compress                 two layouts of a name it points to: refused, "ambiguous"
  dm-queue-length, dm-round-robin, dm-service-time, ebt_ip, ebt_ip6   more of the same,
                                and headers shared with the modules before (merged deltas)
"""
from __future__ import annotations

import os
from array import array

import pytest

from dbhive.modules import kobuild
from scripts.realdata import DEBIAN_RELEASE, deb_members
from tests.support.db_dump import diff_dbs

pytestmark = pytest.mark.slow

DBG_DIR = f"/usr/lib/debug/lib/modules/{DEBIAN_RELEASE}/kernel/"
MODULES = ["arch/x86/crypto/aegis128-aesni.ko", "crypto/aegis128.ko",
           "arch/x86/crypto/ghash-clmulni-intel.ko", "lib/crypto/libcurve25519-generic.ko",
           "drivers/char/ttyprintk.ko", "drivers/char/virtio_console.ko",
           "drivers/infiniband/core/ib_core.ko", "drivers/net/bonding/bonding.ko",
           "lib/zstd/zstd_compress.ko", "drivers/md/dm-queue-length.ko",
           "drivers/md/dm-round-robin.ko", "drivers/md/dm-service-time.ko",
           "net/bridge/netfilter/ebt_ip.ko", "net/bridge/netfilter/ebt_ip6.ko"]


@pytest.fixture(scope="module")
def ko_dir(debian_dbg_deb) -> str:
    """The package's kernel/ directory with only these modules (kobuild reads a directory
    in path order, as the package has them)."""
    first = DBG_DIR + MODULES[0]
    paths = deb_members(debian_dbg_deb, [DBG_DIR + m for m in MODULES], "kobuild/shared")
    return paths[first][:-len(MODULES[0])]


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("shared"))


@pytest.fixture(scope="module")
def own_keys_db(ko_dir, out_dir) -> str:
    """The reference: each module's own keys, merged one by one."""
    out = os.path.join(out_dir, "own.db")
    res = kobuild([ko_dir], out=out, jobs=1, share=False)
    assert res.merge["deltas"]["merged"] == 0
    return out


@pytest.mark.parametrize("jobs", [1, 2])
def test_shared_tables_give_the_same_db(ko_dir, out_dir, own_keys_db, jobs):
    out = os.path.join(out_dir, f"shared-{jobs}.db")
    res = kobuild([ko_dir], out=out, jobs=jobs)
    assert diff_dbs(own_keys_db, out) == []
    deltas = res.merge["deltas"]
    assert sum(deltas.values()) == len(MODULES) and deltas["merged"] > 0, deltas
    if jobs == 1:       # one table: which module is refused, and why, is known
        assert deltas["merged"] >= 5, deltas
        assert deltas["layout"] >= 4 and deltas["absent"] >= 1 and deltas["ambiguous"] >= 1, \
            deltas


def test_a_layout_not_checked_is_a_different_db(ko_dir, out_dir, own_keys_db, monkeypatch):
    """The layout check of the deltas is what keeps the DBs equal: without it, a module's
    pointers reach another module's `struct aegis_state`, and the comparison above sees it."""
    from dbhive.modules import merge
    monkeypatch.setattr(merge.TypeMerger, "_layouts_first", lambda self, d, m, dry: True)
    out = os.path.join(out_dir, "unchecked.db")
    res = kobuild([ko_dir], out=out, jobs=1)
    assert res.merge["deltas"]["layout"] == 0
    assert diff_dbs(own_keys_db, out) != []


def test_closure_in_c_and_python_agree(ko_dir, monkeypatch):
    """keys.closure: the C loop and the pure-Python one, on a real shared table."""
    import random
    from dbhive.dwarf import keys
    from dbhive.modules import merge
    if keys._c is None:
        pytest.skip("the C extension is not built (test_the_c_scanner_is_built fails)")
    sk = merge.SharedKeys()
    for m in MODULES[:6]:
        d = sk.read(os.path.join(ko_dir, m), os.path.basename(m), 8)
    table = sk.table.keys
    rng = random.Random(1)
    seeds = [set(rng.sample(range(len(table)), 40)) for _ in range(20)]
    seeds.append(set(array("l", d.own)))
    in_c = [keys.closure(table, s) for s in seeds]
    monkeypatch.setattr(keys, "_c", None)
    assert [keys.closure(table, s) for s in seeds] == in_c
    assert max(map(len, in_c)) > 1000
