"""`resolver expr` against the real surftrace 0.7.16 client (`surftrace -m local -d DB -S`)
on the same DB.

The client's show mode still looks for a mounted debugfs and creates a tracing instance, so
it runs in a private mount namespace (unshare -m) where debugfs is mounted if it is not
already; the instance it creates is removed afterwards.  Nothing is written to
kprobe_events in show mode (this kernel has no kprobes anyway).
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest

from resolver import ExprError, Resolver
from resolver.expr import translate, translate_filter

# The contract's reference expressions, then more of the syntax.
CONTRACT = [
    "p wake_up_new_task comm=%0->comm",
    "p wake_up_new_task uesrs=S%0->mm->mm_users",
    "p do_filp_open+121 pos=X!(struct file*)%ax->f_pos",
    "p __netif_receive_skb_core proto=@(struct iphdr *)l3%0->protocol",
]
MORE = [
    "p wake_up_new_task c=$comm x=%0 pid=S%0->pid vr=%0->se.vruntime f:pid==1",
    "p do_sys_openat2 dfd=S%0 fn=%1 how=X%2->flags",
    "p vfs_read name=%0->f_path.dentry->d_name.name ino=%0->f_inode->i_ino f:ino>=100",
    "p tcp_sendmsg fam=%0->__sk_common.skc_family dport=%0->__sk_common.skc_dport "
    "sz=%2 f:fam==2&&dport!=0",
    "p tcp_v4_connect a=%0->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2] "
    "st=X%0->__sk_common.skc_state",
    "p __netif_receive_skb_core sp=@(struct tcphdr *)l4%0->source "
    "da=@(struct iphdr *)l3%0->daddr d=@(struct udphdr *)l4%0->cdata[2] "
    "e=@(struct ethhdr *)l2%0->h_proto",
    "r do_filp_open pos=$retval",
    "p do_filp_open+0x10 r=%ax f=!(struct file *)%dx->f_flags",
    "p wake_up_new_task n=!(struct task_struct *)%0->real_parent->comm "
    "pp=%0->real_parent->pid f:ip_x==1.2.3.4",
    "p inet_csk_accept q=%0->sk_rcvbuf t=%0->sk_type p=%0->sk_protocol",
]
ARM = [
    "p wake_up_new_task comm=%0->comm",
    "p wake_up_new_task uesrs=S%0->mm->mm_users",
    "p vfs_read c=%x2 ino=%0->f_inode->i_ino",
]


def _surftrace_bin() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "surftrace")
    if not os.path.exists(exe):
        pytest.fail("the surftrace client is not installed (pip install -e '.[test]')")
    return exe


def surftrace_show(db: str, exprs, tmp_path, arch=None) -> list:
    """The dicts the real client prints in show mode, one per probe."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("the surftrace client's show mode needs root (it mounts debugfs)")
    cmd = [_surftrace_bin(), "-m", "local", "-d", db, "-S"]
    if arch:
        cmd += ["-a", arch]
    cmd += list(exprs)
    inst = "/sys/kernel/debug/tracing/instances/surftrace"
    script = ('mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug; '
              f'had=0; [ -d {inst} ] && had=1; "$@"; rc=$?; '
              f'[ $had = 0 ] && rmdir {inst} 2>/dev/null; exit $rc')
    env = {k: v for k, v in os.environ.items() if k not in ("LBC_PREVDB", "LBC_SERVER")}
    p = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh"] + cmd, cwd=tmp_path,
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = [ast.literal_eval(line) for line in p.stdout.splitlines()
           if line.startswith("{'type'")]
    assert len(out) == len(exprs), p.stdout + p.stderr
    return out


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


def test_filter_translation():
    assert translate_filter("ip_src==1.2.3.4") == "ip_src==0x4030201"
    assert translate_filter("b16_port==80&&(a>1||b<2)") == "b16_port==20480&&(a>1||b<2)"
    assert translate_filter("B16_x==0x1234") == "B16_x==3412"
