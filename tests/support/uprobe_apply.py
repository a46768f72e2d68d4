"""Run `resolver expr --apply --json` around a test program: the probes go into tracefs, the
program runs, the events come back from the trace buffer (one JSON object per event)."""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
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
    # both pipes are read by threads of their own while the program runs (a readline() on a
    # pipe followed by communicate() loses what the readline buffered past its line, and an
    # unread stdout would stall the event stream)
    err_lines: queue.Queue = queue.Queue()
    out_lines: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=_pump, args=(res.stderr, err_lines), daemon=True),
               threading.Thread(target=_pump, args=(res.stdout, out_lines), daemon=True)]
    for t in readers:
        t.start()
    prog = None
    try:
        try:
            first = err_lines.get(timeout=120)
        except queue.Empty:
            first = ""
        if not first.startswith("# applied"):
            res.wait(timeout=30)
            readers[0].join(10)
            pytest.fail(f"resolver --apply did not apply: {first}{_drain(err_lines)}")
        prog = subprocess.Popen(list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        ready = prog.stdout.readline()
        assert ready.startswith("ready"), ready
        rest, _ = prog.communicate("go\n", timeout=timeout)
        res.send_signal(signal.SIGINT)
        res.wait(timeout=60)
        for t in readers:
            t.join(10)
        out, err = _drain(out_lines), _drain(err_lines)
    finally:
        for p in (prog, res):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    events: List[dict] = [json.loads(line) for line in out.splitlines() if line.strip()]
    return events, ready + rest, prog.returncode, first + err


def _pump(pipe, lines: "queue.Queue") -> None:
    for line in pipe:
        lines.put(line)


def _drain(lines: "queue.Queue") -> str:
    out = []
    while True:
        try:
            out.append(lines.get_nowait())
        except queue.Empty:
            return "".join(out)
