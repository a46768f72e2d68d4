"""Run a command under resource limits and report how it ended: exit code, output, wall
time and its own peak RSS (VmHWM of its /proc status, sampled every 20 ms: wait4's
ru_maxrss is no use here, it keeps the RSS the forked child had before exec, i.e. the
size of the pytest process that started it).  RLIMIT_DATA bounds the heap and private mappings
(mapping a large input file read-only is not counted, reading it into memory is); a timeout
bounds the wall time."""
from __future__ import annotations

import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_mb: float

    @property
    def one_line_error(self) -> bool:
        """A user error as the CLIs print it: one `prog: error: ...` line, no traceback."""
        lines = [x for x in self.stderr.strip().splitlines()
                 if x and ": warning: " not in x]
        return (len(lines) == 1 and ": error: " in lines[0]
                and "Traceback" not in self.stderr)


def run_bounded(cmd, timeout: float = 60, max_data_mb: int = 1536, cwd=None, env=None,
                stdin=subprocess.DEVNULL) -> Outcome:
    def limits():
        lim = max_data_mb << 20
        resource.setrlimit(resource.RLIMIT_DATA, (lim, lim))

    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                         env=env, stdin=stdin, preexec_fn=limits)
    chunks = {"out": [], "err": []}

    def drain(stream, key):
        for block in iter(lambda: stream.read(65536), b""):
            chunks[key].append(block)

    readers = [threading.Thread(target=drain, args=(p.stdout, "out"), daemon=True),
               threading.Thread(target=drain, args=(p.stderr, "err"), daemon=True)]
    for r in readers:
        r.start()
    status = None
    peak_kb = 0
    while status is None:
        peak_kb = max(peak_kb, _hwm_kb(p.pid))
        pid, st, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            status = st
        elif time.monotonic() - t0 > timeout:
            p.kill()
            os.wait4(p.pid, 0)
            p.returncode = -9
            raise AssertionError(f"{cmd} did not finish within {timeout} s")
        else:
            time.sleep(0.02)
    wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join(5)
    return Outcome(p.returncode, b"".join(chunks["out"]).decode("utf-8", "replace"),
                   b"".join(chunks["err"]).decode("utf-8", "replace"), wall,
                   peak_kb / 1024)


def _hwm_kb(pid: int) -> int:
    """The peak RSS (kB) of the program `pid` runs now (0 before its exec is visible)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
