"""Run `resolver expr --apply --json` around a test program: the probes go into tracefs, the
program runs, the events come back from the trace buffer (one JSON object per event)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import List, Sequence

import pytest


def resolver_bin() -> str:
    return os.path.join(os.path.dirname(sys.executable), "resolver")


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("uprobe tests write tracefs uprobe_events: they run as root")


def apply_and_run(exprs: Sequence[str], cmd: Sequence[str], debug_dirs: Sequence[str] = (),
                  timeout: float = 180) -> tuple:
    """(events, the program's stdout, its exit code, resolver's stderr).  The program must
    print one line when it is ready and then wait for a line on stdin."""
    need_root()
    args = [resolver_bin(), "expr", "--apply", "--json", *exprs]
    for d in debug_dirs:
        args += ["--debug-dir", d]
    res = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prog = None
    try:
        first = res.stderr.readline()
        if not first.startswith("# applied"):
            out, err = res.communicate(timeout=30)
            pytest.fail(f"resolver --apply did not apply: {first}{err}")
        prog = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        ready = prog.stdout.readline()
        assert ready.startswith("ready"), ready
        rest, _ = prog.communicate("go\n", timeout=timeout)
        res.send_signal(signal.SIGINT)
        out, err = res.communicate(timeout=60)
    finally:
        for p in (prog, res):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert res.returncode == 0, err
    events: List[dict] = [json.loads(line) for line in out.splitlines() if line.strip()]
    return events, ready + rest, prog.returncode, first + err
