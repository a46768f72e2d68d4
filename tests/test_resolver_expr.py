"""`resolver expr` against the real surftrace 0.7.16 client (`surftrace -m local -d DB -S`)
on the same DB.

The client's show mode still looks for a mounted debugfs and creates a tracing instance, so
it runs in a private mount namespace (unshare -m) where debugfs is mounted if it is not
already; the instance it creates is removed afterwards.  Nothing is written to
kprobe_events in show mode (this kernel has no kprobes anyway).
"""
from __future__ import annotations

import pytest

from dbhive.errors import CorruptDB, exit_code
from resolver import ExprError, Resolver
from resolver.expr import translate, translate_filter
from tests.support.surftrace_client import ARM, CONTRACT, MORE, surftrace_show

def _ours(db, exprs, arch="x86_64", compat=True):
    with Resolver.open(db=db, overlay=None) as r:
        return [p.surftrace_dict() for p in translate(r, exprs, arch=arch, compat=compat)]


@pytest.mark.parametrize("which", ["running", "debian"])
def test_expr_equals_surftrace_client(which, running_db, debian_db, tmp_path):
    db = running_db if which == "running" else debian_db
    exprs = CONTRACT + MORE
    if which == "debian":       # static there, so not in its BTF; same argument type
        exprs = [e.replace("__netif_receive_skb_core", "__netif_receive_skb") for e in exprs]
    theirs = surftrace_show(db, exprs, tmp_path)
    assert _ours(db, exprs) == theirs
    # the contract's lines have no bitfield and no $retval chain: same without compat
    plain = _ours(db, exprs[:len(CONTRACT)], compat=False)
    assert plain == theirs[:len(CONTRACT)]


def test_expr_equals_surftrace_client_aarch64_registers(running_db, tmp_path):
    assert _ours(running_db, ARM, arch="aarch64") == surftrace_show(running_db, ARM, tmp_path,
                                                                     arch="aarch64")


def test_contract_shapes(running_db):
    with Resolver.open(db=running_db, overlay=None) as r:
        lines = [p.line for p in translate(r, CONTRACT)]
        comm = r.offset("task_struct.comm").offset
        mm = r.offset("task_struct.mm").offset
        users = r.offset("mm_struct.mm_users").offset
        fpos = r.offset("file.f_pos").offset
        data = r.offset("sk_buff.data").offset
    assert lines[0] == f"p:p0 wake_up_new_task comm=+0x{comm:x}(%di):string"
    assert lines[1] == f"p:p1 wake_up_new_task uesrs=+0x{users:x}(+0x{mm:x}(%di)):s32"
    assert lines[2] == f"p:p2 do_filp_open+121 pos=+0x{fpos:x}(%ax):x64"
    assert lines[3] == (f"p:p3 __netif_receive_skb_core proto=+0x9(+0x{data:x}(%di)):u8")


def test_beyond_the_client(running_db):
    with Resolver.open(db=running_db, overlay=None) as r:
        # $retval keeps its member chain
        (p,) = translate(r, ["r do_filp_open pos=$retval->f_pos"])
        assert p.line == f"r:r0 do_filp_open pos=+0x{r.offset('file.f_pos').offset:x}($retval):u64"
        # a bitfield is fetched with its width and shift
        bf = r.offset("sock.__sk_common.skc_ipv6only")
        (p,) = translate(r, ["p tcp_sendmsg v6=%0->__sk_common.skc_ipv6only"])
        assert p.line.endswith(f"v6=+0x{bf.offset:x}(%di):b{bf.bit_size}@{bf.bit_offset}/"
                               f"{bf.size * 8}")
        (p,) = translate(r, ["p tcp_sendmsg v6=%0->__sk_common.skc_ipv6only"], compat=True)
        assert p.line.endswith(f"v6=+0x{bf.offset:x}(%di):u{bf.size * 8}")
        # typedef'd structs can be walked
        (p,) = translate(r, ["p wake_up_new_task u=%0->mm->mm_users.counter"])
        assert p.line.endswith(":u32")


@pytest.mark.parametrize("bad,match", [
    ("p wake_up_new_task comm=%0->no_such_member", "not a member"),
    ("p no_such_function_xyz a=%0", "no such function"),
    ("p wake_up_new_task a=%9", "only 1 arguments"),
    ("p wake_up_new_task a=%0.pid", "should start with '->'"),
    ("p wake_up_new_task a=%0->files.fdt", "pointer"),
    ("p wake_up_new_task a=%0->se", "can not be shown"),
    ("p wake_up_new_task a=%0->pid->x", "not a pointer"),
    ("p wake_up_new_task a=%zz", "error in expr|not a x86_64 register"),
    ("p wake_up_new_task a=@(struct task_struct *)l3%0->pid", "network header"),
    ("x wake_up_new_task a=%0", "probe type"),
    ("p wake_up_new_task a=%0 a=%0", "already used"),
    ("p wake_up_new_task common_pid=%0", "reserved"),
    ("p wake_up_new_task' OR 1=1 a=%0", "bad symbol"),
    ("p wake_up_new_task a=%0 f:pid", "no comparison"),
])
def test_expr_errors(running_db, bad, match):
    with Resolver.open(db=running_db, overlay=None) as r:
        with pytest.raises(ExprError, match=match):
            translate(r, [bad])


@pytest.mark.parametrize("line,lookup", [
    ("p vfs_read n=!(struct file *)%0->f_path.dentry", "find_type"),     # a cast
    ("p vfs_read n=!(struct file *)%0", "find_type"),
    ("p __netif_receive_skb_core a=@(struct iphdr *)l3%0->protocol", "find_type"),   # a header
    ("p __netif_receive_skb_core a=@(struct iphdr *)l3%0->protocol", "offset"),  # sk_buff.data
])
def test_a_damaged_db_met_mid_expression_is_not_an_expression_error(running_db, lookup, line,
                                                                    monkeypatch):
    """The translator turns a type or member this kernel lacks into the expression's error
    (6), but a damaged DB that a cast's, a header's or sk_buff.data's lookup runs into keeps
    its own (CorruptDB, 7).  The real DB, its lookups made to fail as a damaged page makes
    them: the hostile damaged DBs already fail at the probed function's lookup."""
    def damaged(*a, **k):
        raise CorruptDB(f"{running_db} is damaged (database disk image is malformed)")
    with Resolver.open(db=running_db, overlay=None) as r:
        translate(r, [line])                    # fine on the real DB
        monkeypatch.setattr(r, lookup, damaged)
        with pytest.raises(CorruptDB) as got:
            translate(r, [line])
    assert not isinstance(got.value, ExprError) and exit_code(got.value) == 7


def test_filter_translation():
    assert translate_filter("ip_src==1.2.3.4") == "ip_src==0x4030201"
    assert translate_filter("b16_port==80&&(a>1||b<2)") == "b16_port==20480&&(a>1||b<2)"
    assert translate_filter("B16_x==0x1234") == "B16_x==3412"
