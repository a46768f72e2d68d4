"""In the guest: prove bcc compiles, loads and runs a tracepoint program on this kernel.

A counter on syscalls:sys_enter_getppid filtered to this process; the process calls
getppid() N times; the map must then hold exactly N.  Prints one JSON object.
"""
import json
import os
import sys
import time

N = 100
t0 = time.monotonic()
from bcc import BPF  # noqa: E402  (import time is part of what is measured)
t_import = time.monotonic() - t0

PROGRAM = """
BPF_ARRAY(hits, u64, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    if ((bpf_get_current_pid_tgid() >> 32) != TARGET_PID)
        return 0;
    u32 key = 0;
    u64 *v = hits.lookup(&key);
    if (v)
        __sync_fetch_and_add(v, 1);
    return 0;
}
"""
t1 = time.monotonic()
b = BPF(text=PROGRAM, cflags=[f"-DTARGET_PID={os.getpid()}"])
t_compile = time.monotonic() - t1
for _ in range(N):
    os.getppid()
hits = b["hits"][0].value
b.cleanup()
print(json.dumps({"import_s": round(t_import, 2), "compile_load_s": round(t_compile, 2),
                  "expected": N, "hits": hits, "kernel": os.uname().release}))
sys.exit(0 if hits == N else 1)
