"""Proof that the RET file offsets are right: plain uprobes (bcc) at the entry and at every
RET of main.countMe in a running test program, which calls it N times.  Each call must enter
once and return once, through the RET its branch takes (N/3 each)."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.support.go_builds import binary
from resolver.golang.report import analyze_go_binary

BPF_TEXT = b"""
#include <uapi/linux/ptrace.h>
BPF_HASH(counts, u64, u64);
int on_entry(struct pt_regs *ctx) { u64 k = 0; counts.increment(k); return 0; }
int on_ret(struct pt_regs *ctx) { u64 k = PT_REGS_IP(ctx); counts.increment(k); return 0; }
"""
N = 300


def _kernel_headers():
    rel = os.uname().release
    base = f"/lib/modules/{rel}"
    os.makedirs(base, exist_ok=True)
    for link, target in (("build", "/usr/src/linux-headers-6.1.0-47-cloud-amd64"),
                         ("source", "/usr/src/linux-headers-6.1.0-47-common")):
        if not os.path.exists(os.path.join(base, link)) and os.path.isdir(target):
            os.symlink(target, os.path.join(base, link))


@pytest.mark.parametrize("variant", ["strip", "pie"])
def test_ret_uprobes_count_every_return(variant):
    bcc = pytest.importorskip("bcc")
    if os.geteuid() != 0:
        pytest.skip("needs root for BPF")
    _kernel_headers()
    path = binary("1.24", "tlsapp", variant)
    rep = analyze_go_binary(path, symbols=["main.countMe"])
    fn = rep.symbols["main.countMe"]
    assert fn and len(fn["returns"]) == 3
    proc = subprocess.Popen([path, "loop", str(N)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        b = bcc.BPF(text=BPF_TEXT)
        for fn_name, off in [("on_entry", fn["file_offset"])] + [("on_ret", r) for r in fn["returns"]]:
            f = b.load_func(fn_name.encode(), bcc.BPF.KPROBE)
            ev = b._get_uprobe_evname(b"p", path.encode(), off, proc.pid)
            fd = bcc.lib.bpf_attach_uprobe(f.fd, 0, ev, path.encode(), off, proc.pid)
            assert fd >= 0, f"attach at file offset {off:#x} failed"
            b._add_uprobe_fd(ev, fd)
        out, _ = proc.communicate("go\n", timeout=60)
        assert out.startswith("done")
        time.sleep(0.2)
        counts = {k.value: v.value for k, v in b["counts"].items()}
        b.cleanup()
    finally:
        if proc.poll() is None:
            proc.kill()
    entries = counts.pop(0, 0)
    assert entries == N
    assert sum(counts.values()) == N            # every call returned exactly once
    assert sorted(counts.values()) == [N // 3] * 3   # n%3 picks one of three RETs
