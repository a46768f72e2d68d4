"""Uprobe expressions: `resolver expr 'P …'` next to the surftrace client's `surftrace -S`
(through gdb) on the same expression, both as commands (process start included), alternating
runs, warm cache, medians.  Also ours on libc (types from libc6-dbg's debug file) and on a
Go binary (R expanded to every RET), which the client cannot translate.

    .venv/bin/python -m bench.bench_uprobe [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from tests.support.go_builds import binary
from tests.support.surftrace_client import surftrace_bin
from tests.support.uprobe_builds import program

RESOLVER = os.path.join(os.path.dirname(sys.executable), "resolver")
SCRIPT = 'mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug; exec "$@"'


def _time(cmd) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    dt = time.perf_counter() - t
    if p.returncode != 0 or "{'type'" not in p.stdout and ":0x" not in p.stdout:
        raise RuntimeError(f"{cmd[0]} failed: {p.stdout[-500:]}{p.stderr[-500:]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    prog = program("nopie")
    expr = (f"P {prog}:handle_req seq=%0->seq id=%0->in.id tag=%0->in.tag "
            f"name=%0->name k=%1 label=%2")
    ours = [RESOLVER, "expr", "--compat", expr]
    theirs = ["unshare", "-m", "sh", "-c", SCRIPT, "sh", surftrace_bin(), "-m", "local", "-d",
              "/dev/null", "-S", expr]
    go = binary("1.24", "uprobeapp", "strip")
    extra = {
        "ours, libc (debug file by build-id, 4 MB DWARF)":
            [RESOLVER, "expr", "P libc:fputs s=%0 fd=%1->_fileno"],
        "ours, Go stripped, R at every RET + member chain":
            [RESOLVER, "expr", f"P {go}:crypto/tls.(*Conn).Write len=%2 "
                               f"fd=S%0->conn.!(*net.TCPConn)data->conn.fd->pfd.Sysfd",
             f"R {go}:crypto/tls.(*Conn).Write n=$retval"],
    }
    for cmd in [ours, theirs] + list(extra.values()):      # warm the page cache
        _time(cmd)
    a, b = [], []
    for _ in range(args.runs):
        a.append(_time(ours))
        b.append(_time(theirs))
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"C program, one P expression with 6 fetches, median of {args.runs} alternating runs:")
    print(f"  ours   resolver expr      {ma * 1000:8.1f} ms")
    print(f"  client surftrace -S (gdb) {mb * 1000:8.1f} ms   (ours {mb / ma:.2f}x faster)")
    for name, cmd in extra.items():
        ts = [_time(cmd) for _ in range(args.runs)]
        print(f"  {name}: {statistics.median(ts) * 1000:.1f} ms (the client cannot)")


if __name__ == "__main__":
    main()
