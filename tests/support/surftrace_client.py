"""The real surftrace 0.7.16 client as an oracle: the expressions it is compared on, and
its show mode (`surftrace -m local -d DB -S`) run in a private mount namespace.

The client's show mode still looks for a mounted debugfs and creates a tracing instance, so
it runs under `unshare -m` where debugfs is mounted if it is not already; the instance it
creates is removed afterwards.  Nothing is written to kprobe_events in show mode.
"""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys

import pytest

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


def surftrace_bin() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "surftrace")
    if not os.path.exists(exe):
        pytest.fail("the surftrace client is not installed (pip install -e '.[test]')")
    return exe


def surftrace_show(db: str, exprs, tmp_path, arch=None) -> list:
    """The dicts the real client prints in show mode, one per probe."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("the surftrace client's show mode needs root (it mounts debugfs)")
    cmd = [surftrace_bin(), "-m", "local", "-d", db, "-S"]
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
