"""`Resolver.from_btf`: answers straight from a kernel's BTF equal those of the DB that
`dbhive build` makes from the same BTF (the tracer relies on this: offsets from BTF and
from a DB must give byte-identical maps)."""
from __future__ import annotations

import pytest

from resolver import NoKernelDB, Resolver


def _every_member_path(r: Resolver):
    for s in r.dump():
        if not s.name.startswith(("struct ", "union ")):
            continue
        base = s.name.split(" ", 1)[1]
        for m in s.members:
            if m.name:
                yield f"{s.name.split(' ', 1)[0]} {base}.{m.name}"


@pytest.mark.parametrize("which", ["running", "debian"])
def test_from_btf_equals_db(which, running_btf, running_db, debian_vmlinux_btf, debian_db):
    btf, db = (running_btf, running_db) if which == "running" else (debian_vmlinux_btf, debian_db)
    rb = Resolver.from_btf(btf)
    rd = Resolver.open(db=db, overlay=None)
    assert rb.source == f"btf:{btf}" and rd.source.startswith("db:")
    structs = paths = 0
    for s in rd.dump():
        assert rb.struct(s.name).as_dict() == s.as_dict(), s.name
        structs += 1
    for p in _every_member_path(rd):
        assert rb.offset(p) == rd.offset(p), p
        paths += 1
    assert structs > 5000 and paths > 40000
    for f in ("do_filp_open", "tcp_sendmsg", "wake_up_new_task"):
        assert rb.func(f) == rd.func(f)


def test_from_btf_running_kernel_identity(running_btf):
    from resolver.choose import running_identity
    r = Resolver.from_btf()
    ident = running_identity()
    assert r.kernel["release"] == ident.release and r.kernel["build_id"] == ident.build_id
    assert r.offset("task_struct.files").offset == r.offset("struct task_struct.files").offset


def test_from_btf_bad_input(tmp_path):
    with pytest.raises(NoKernelDB, match="no such BTF"):
        Resolver.from_btf(str(tmp_path / "missing.btf"))
    bad = tmp_path / "x.btf"
    bad.write_bytes(b"not btf at all, definitely not" * 4)
    with pytest.raises(NoKernelDB, match="not BTF"):
        Resolver.from_btf(str(bad))
