"""Resolver offsets against pahole on DBs built from real kernels.

The expected numbers are never written here: each comes from pahole's layout of the same
input (composed along the path; typedef names resolved with bpftool's dump of the BTF).
"""
from __future__ import annotations

import pytest

from resolver import AbsentMember, BadPath, NoSuchType, NotAPointer, Resolver
from tests.support import need_tool
from tests.support.offset_oracle import PATHS, check_paths
from tests.support.resolver_dbs import PaholeOffsets, build_btf_db, debian_meta

@pytest.fixture(scope="session")
def debian_btf_db(debian_vmlinux_btf):
    return build_btf_db(debian_vmlinux_btf, debian_meta())


def test_paths_list_is_big_enough():
    assert len(set(PATHS)) >= 50


def test_running_kernel_offsets_equal_pahole(running_db, running_btf):
    need_tool("pahole")
    need_tool("bpftool")
    oracle = PaholeOffsets(running_btf, "btf", running_btf)
    with Resolver.open(db=running_db, overlay=None) as r:
        present, absent, bitfields = check_paths(r, oracle, PATHS)
    assert present >= 50 and bitfields >= 4, (present, absent, bitfields)


def test_debian_btf_offsets_equal_pahole(debian_btf_db, debian_vmlinux_btf):
    need_tool("pahole")
    oracle = PaholeOffsets(debian_vmlinux_btf, "btf", debian_vmlinux_btf)
    with Resolver.open(db=debian_btf_db, overlay=None) as r:
        present, absent, bitfields = check_paths(r, oracle, PATHS)
        # 6.1 still has the 5.14+ names; both kernels agree on the shape
        assert isinstance(r.offset("task_struct.__state").offset, int)
    assert present >= 50, (present, absent)


def test_every_top_level_member_of_common_structs(running_db, running_btf):
    """Beyond the list: every member pahole prints for a set of big structs."""
    oracle = PaholeOffsets(running_btf, "btf", running_btf)
    n = 0
    with Resolver.open(db=running_db, overlay=None) as r:
        for key in ("struct task_struct", "struct sock", "struct sk_buff", "struct file",
                    "struct inode", "struct tcp_sock", "struct net_device", "struct dentry",
                    "struct mm_struct", "struct super_block"):
            lay = oracle.layouts[key][0]
            name = key.split()[1]
            for m in lay.members:
                got = r.offset(f"{name}.{m.path}")
                assert got.offset == m.offset, (key, m, got)
                assert got.bit_size == m.bit_size and got.bit_offset == m.bit_offset, (m, got)
                if not m.array_dims or all(m.array_dims):
                    assert got.size == m.size, (key, m, got)
                n += 1
    assert n > 1000


def test_pointer_hops(running_db):
    with Resolver.open(db=running_db, overlay=None) as r:
        o = r.offset("task_struct->files->fdt")
        assert [h.offset for h in o.hops] == [r.offset("task_struct.files").offset,
                                              r.offset("files_struct.fdt").offset]
        assert o.offset == r.offset("files_struct.fdt").offset
        o = r.offset("file->f_path.dentry->d_name.name")
        assert [h.offset for h in o.hops] == [r.offset("file.f_path.dentry").offset,
                                              r.offset("dentry.d_name.name").offset]


def test_errors_are_specific(running_db):
    with Resolver.open(db=running_db, overlay=None) as r:
        with pytest.raises(AbsentMember, match="absent in this kernel"):
            r.offset("task_struct.no_such_member")
        with pytest.raises(NoSuchType):
            r.offset("no_such_struct_xyz.a")
        with pytest.raises(NotAPointer, match="use '->'"):
            r.offset("task_struct.files.fdt")
        with pytest.raises(NotAPointer):
            r.offset("task_struct->pid->x")
        with pytest.raises(AbsentMember, match="out of range"):
            r.offset("task_struct.comm[16]")
        with pytest.raises(NotAPointer, match="not an array"):
            r.offset("task_struct.pid[1]")
        for bad in ("", "task_struct", "task_struct.", "a..b", "a.b[x]", "1abc.x",
                    "a.b; DROP TABLE kt_types", "a.b' OR '1'='1"):
            with pytest.raises(BadPath):
                r.offset(bad)
        assert all(isinstance(e, LookupError) for e in
                   r.offsets(["a.b' OR 1=1 --", "task_struct.nope"]).values())


def test_struct_and_func(running_db, running_btf):
    oracle = PaholeOffsets(running_btf, "btf", running_btf)
    with Resolver.open(db=running_db, overlay=None) as r:
        s = r.struct("sock_common")
        lay = oracle.layouts["struct sock_common"][0]
        assert s.size == lay.size
        named = {m.name: m for m in s.members if m.name}
        for m in lay.members:
            if m.path in named:
                assert named[m.path].offset == m.offset
        assert r.struct("atomic_t").members[0].name == "counter"
        f = r.func("do_filp_open")[0]
        assert [p.type for p in f.params] == ["int", "struct filename *",
                                              "const struct open_flags *"]
        assert f.ret == "struct file *"
        assert [p.name for p in f.params] == ["dfd", "pathname", "op"]


def test_surftrace_tables_agree_with_the_resolver(running_db):
    """Every row of the surftrace `members` table (what the client reads) names a member
    path the resolver answers from the kt_* tables with the same offset, size and bits."""
    import sqlite3
    conn = sqlite3.connect(f"file:{running_db}?mode=ro", uri=True)
    n = 0
    with Resolver.open(db=running_db, overlay=None) as r:
        for sid, sname in conn.execute("SELECT id, name FROM structs").fetchall():
            for (name, off, nbytes, bits) in conn.execute(
                    "SELECT name, offset, bytes, bits FROM members WHERE fid = ?", (sid,)):
                o = r.offset(f"{sname}.{name.split('[')[0]}")
                if bits:
                    bit, width = map(int, bits.split(":"))
                    assert (off * 8 + bit, width) == (o.bit_position, o.bit_size), (sname, name)
                else:
                    assert (off, nbytes) == (o.offset, o.size), (sname, name, o)
                n += 1
    assert n > 100000
