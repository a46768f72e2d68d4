"""`resolver expr 'P …' / 'R …'` on C: a test program built here with -g
(data/uprobe-src/uprobeprog.c) and Debian's libc with its debug file (libc6-dbg, found by
build-id under /usr/lib/debug/.build-id/).

The proof is the kernel's: the generated lines are written into tracefs (`--apply`), the
program runs, and the values in the events read back from the trace buffer must equal what
the program printed.  The real surftrace client (`-S`, through gdb) is compared where it
can translate the same expression; where it cannot, the test says why.
"""
from __future__ import annotations

import os
import re
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from resolver.expr import translate
from resolver.uprobe.binary import find_library
from tests.support.surftrace_client import surftrace_bin
from tests.support.uprobe_apply import apply_and_run, resolver_bin
from tests.support.uprobe_builds import debug_dir, program

N = 5
LIBC = "/usr/lib/debug/.build-id"


def _exprs(prog: str) -> list:
    return [
        f"P {prog}:handle_req seq=%0->seq id=S%0->in.id tag=%0->in.tag name=%0->name k=S%1 "
        f"label=%2",
        f"P {prog}:handle_req kind=%0->in.kind level=%0->in.level delta=%0->in.delta "
        f"wide=%0->in.wide x=S%0->in.where.x y=S%0->in.where.y",
        f"P {prog}:handle_req ps=S%0->parent->seq pn=%0->parent->name fa=%0->flag_a "
        f"fb=%0->flag_b a2=S%0->arr[2] p1=S%0->pts[1].y h=%0->hits.counter",
        f"R {prog}:handle_req ret=$retval",
        f"R {prog}:pick_parent pseq=S$retval->seq pname=$retval->name",
        # wrong on purpose (a struct req * read as a struct inner *): the check must see it
        f"P {prog}:handle_req bad=S!(struct inner *)%0->id",
    ]


# trace variable -> (event, the program's key, how to read the event's text)
def _hex(v):
    return int(v, 16)


def _s7(v):                 # a signed 7-bit bitfield is fetched as its unsigned bits
    v = int(v)
    return v - 128 if v >= 64 else v


CHECKS = {
    "seq": ("p0", "seq", int), "id": ("p0", "id", int), "tag": ("p0", "tag", str),
    "name": ("p0", "name", str), "k": ("p0", "k", int), "label": ("p0", "label", str),
    "kind": ("p1", "kind", int), "level": ("p1", "level", int), "delta": ("p1", "delta", _s7),
    "wide": ("p1", "wide", int), "x": ("p1", "x", int), "y": ("p1", "y", int),
    "ps": ("p2", "parent_seq", int), "pn": ("p2", "parent_name", str),
    "fa": ("p2", "flag_a", int), "fb": ("p2", "flag_b", int), "a2": ("p2", "arr2", int),
    "p1": ("p2", "pts1y", int), "h": ("p2", "hits", int),
    "ret": ("r3", "ret", _hex), "pseq": ("r4", "pp_seq", int), "pname": ("r4", "parent_name", str),
}
LIBC_CHECKS = {"s": ("p6", "text", str), "fd": ("p6", "fd", int), "ns": ("p7", "nsec", int),
               "n": ("r8", "fwrite", _hex)}


def _printed(stdout: str, kind: str) -> list:
    rows = []
    for line in stdout.splitlines():
        if line.startswith(kind + " "):
            rows.append(dict(w.split("=", 1) for w in line.split()[1:]))
    return rows


def mismatches(events, printed, checks, pid=None) -> list:
    """Every (var, call, event value, printed value) that differs; a missing event too."""
    bad = []
    by_event: dict = {}
    for e in events:
        if pid is None or e["pid"] == pid:
            by_event.setdefault(e["event"], []).append(e)
    for var, (event, key, conv) in checks.items():
        got = by_event.get(event, [])
        if len(got) != len(printed):
            bad.append((var, "count", len(got), len(printed)))
            continue
        for i, (e, row) in enumerate(zip(got, printed)):
            mine = conv(e["args"][var])
            want = type(mine)(row[key]) if not isinstance(mine, str) else row[key]
            if mine != want:
                bad.append((var, i, mine, want))
    return bad


@pytest.fixture(scope="module")
def pie_run():
    prog = program("pie")
    libc = [f"P libc:fputs s=%0 fd=S%1->_fileno", "P libc:nanosleep ns=%0->tv_nsec",
            "R libc:fwrite n=$retval"]
    events, out, rc, err = apply_and_run(_exprs(prog) + libc, [prog, str(N)])
    assert rc == 0 and "done" in out, out
    return prog, events, out, err


def test_c_trace_buffer_equals_program(pie_run):
    prog, events, out, _err = pie_run
    calls = _printed(out, "call")
    assert len(calls) == N
    assert mismatches(events, calls, CHECKS) == []


def test_c_wrong_probe_is_caught(pie_run):
    """The checker is not blind: a probe reading the wrong member disagrees."""
    _prog, events, out, _err = pie_run
    bad = mismatches(events, _printed(out, "call"), {"bad": ("p5", "id", int)})
    assert len(bad) == N


def test_libc_by_debug_file_trace_buffer(pie_run):
    prog, events, out, err = pie_run
    libc = find_library("libc")
    assert f"{libc}:0x" in err                   # the library the loader uses, by file offset
    pid = next(e["pid"] for e in events if e["event"] == "p0")
    assert mismatches(events, _printed(out, "libc"), LIBC_CHECKS, pid=pid) == []


def test_libc_types_come_from_the_build_id_debug_file():
    libc = find_library("libc")
    (p,) = translate(None, ["P libc:fputs fd=%1->_fileno"], uprobes=True)
    with open(libc, "rb") as fh:
        notes = ELFFile(fh).get_section_by_name(".note.gnu.build-id")
        bid = next(notes.iter_notes())["n_desc"]
    assert p.facts["types"] == f"{LIBC}/{bid[:2]}/{bid[2:]}.debug"
    assert p.facts["dwarf_function"] == "_IO_fputs"      # fputs is an alias of it
    assert p.facts["binary"] == libc


def _elf_file_offset(path: str, name: str) -> int:
    """Oracle: pyelftools, symbol value -> the PT_LOAD holding it -> file offset."""
    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        for secname in (".symtab", ".dynsym"):
            sec = elf.get_section_by_name(secname)
            if sec is None:
                continue
            for sym in sec.iter_symbols():
                if sym.name == name and sym["st_value"]:
                    v = sym["st_value"]
                    for seg in elf.iter_segments():
                        if seg["p_type"] == "PT_LOAD" and \
                                seg["p_vaddr"] <= v < seg["p_vaddr"] + seg["p_filesz"]:
                            return v - seg["p_vaddr"] + seg["p_offset"]
    raise AssertionError(f"{name} not in {path}")


@pytest.mark.parametrize("variant", ["pie", "nopie"])
def test_file_offsets_match_pyelftools(variant):
    prog = program(variant)
    out = translate(None, [f"P {prog}:handle_req", f"R {prog}:pick_parent",
                           "P libc:fputs", "P libc:nanosleep"], uprobes=True)
    want = [_elf_file_offset(prog, "handle_req"), _elf_file_offset(prog, "pick_parent"),
            _elf_file_offset(find_library("libc"), "fputs"),
            _elf_file_offset(find_library("libc"), "nanosleep")]
    assert [p.facts["file_offset"] for p in out] == want
    assert out[1].line.startswith(f"r:r1 {prog}:0x{want[1]:x}")      # R on C: a uretprobe


def test_nopie_trace_buffer_equals_program():
    prog = program("nopie")
    events, out, rc, _err = apply_and_run(_exprs(prog)[:3], [prog, "3"])
    assert rc == 0
    checks = {k: v for k, v in CHECKS.items() if v[0] in ("p0", "p1", "p2")}
    assert mismatches(events, _printed(out, "call"), checks) == []


def test_separate_debug_file_by_build_id():
    """A stripped program: its types from <debug-dir>/.build-id/…, same lines as unstripped."""
    stripped, full = program("stripped"), program("pie")
    exprs = _exprs("{}")[:3]
    ours = translate(None, [e.format(stripped) for e in exprs], uprobes=True,
                     debug_dirs=(debug_dir(),))
    ref = translate(None, [e.format(full) for e in exprs], uprobes=True)
    assert [p.line.replace(stripped, "X") for p in ours] == \
        [p.line.replace(full, "X") for p in ref]
    assert ours[0].facts["types"].startswith(debug_dir() + "/.build-id/")


# ---- the real surftrace client (show mode, gdb) ------------------------------------------------

CLIENT_OK = [0, 3, 4]          # expressions (of _exprs) the client translates too
CLIENT_TIMEOUT = 90


def _client_show(expr: str, tmp_path):
    script = ("mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug; "
              'exec "$@"')
    try:
        p = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", surftrace_bin(), "-m",
                            "local", "-d", "/dev/null", "-S", expr], cwd=tmp_path,
                           capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return None
    rows = [line for line in p.stdout.splitlines() if line.startswith("{'type'")]
    return (eval(rows[0]) if rows else p.stdout + p.stderr)  # noqa: S307 - the client's repr


def test_surftrace_client_show_matches(tmp_path):
    """Same line as the client's `-S`, except the offset: the client prints 0x0 for every
    function (its ELF symbol reader, surfElf.CelfSym, is a stub returning 0)."""
    prog = program("nopie")
    exprs = _exprs(prog)
    hung = []
    for i in CLIENT_OK:
        theirs = _client_show(exprs[i], tmp_path)
        if theirs is None:          # gdb 13's parser may hang: the trace buffer test stands
            hung.append(exprs[i])
            continue
        assert isinstance(theirs, dict), theirs
        (p,) = translate(None, [exprs[i]], uprobes=True, compat=True)
        mine = p.surftrace_dict()
        assert f":0x{p.facts['file_offset']:x} " in mine["fxpr"]
        mine["fxpr"] = mine["fxpr"].replace(f":0x{p.facts['file_offset']:x} ", ":0x0 ", 1)
        assert mine == theirs
    assert len(hung) < len(CLIENT_OK), f"the client hung (gdb) on every expression: {hung}"


@pytest.mark.parametrize("expr,why", [
    ("P {prog}:handle_req h=%0->hits.counter", "legal struct"),        # a typedef'd struct
    ("P /lib/x86_64-linux-gnu/libc.so.6:fputs fd=%1->_fileno", "legal struct"),  # FILE *
])
def test_surftrace_client_cannot(expr, why, tmp_path):
    """Where the client fails, ours translates (and the trace buffer test proves ours)."""
    prog = program("nopie")
    theirs = _client_show(expr.format(prog=prog), tmp_path)
    if theirs is None:
        pytest.skip("the client hung in gdb")
    assert isinstance(theirs, str) and why in theirs
    (p,) = translate(None, [expr.format(prog=prog)], uprobes=True)
    assert p.facts["args"]


# ---- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("expr,code,match", [
    ("P /no/such/binary:main", 1, "/no/such/binary: no such file"),
    ("P libnosuchlib_xyz:f", 1, "not in the ldconfig cache"),
    ("P {prog}:no_such_function a=%0", 4, "no_such_function: no such function in"),
    ("P {stripped}:handle_req a=%0->seq", 1, "no DWARF debug info"),
    ("P {prog}:handle_req a=%0->no_such_member", 6, "no_such_member is not a member in "
                                                    "struct req"),
    ("P {prog}:handle_req a=%7", 6, "passed on the stack"),
    ("P {prog}:handle_req a=%0->in.nope", 6, "nope is not a member in struct inner"),
    ("P {prog} a=%0", 6, "expected <binary>:<function>"),
    ("P {prog}:handle_req+0x10000", 4, "past the end of handle_req"),
])
def test_bad_input_one_line(expr, code, match):
    e = expr.format(prog=program("pie"), stripped=program("stripped"))
    p = subprocess.run([resolver_bin(), "expr", e], capture_output=True, text=True)
    assert p.returncode == code, p.stderr
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert match in lines[0]


def test_json_gives_facts():
    prog = program("pie")
    p = subprocess.run([resolver_bin(), "expr", "--json", f"P {prog}:handle_req s=%0->seq"],
                       capture_output=True, text=True, check=True)
    import json
    d = json.loads(p.stdout)
    assert d["type"] == "P" and d["line"].startswith(f"p:p0 {prog}:0x")
    f = d["facts"]
    assert f["function"] == "handle_req" and f["types"] == prog and f["args"] == \
        {"s": "+0x0(%di):u64"} and f["build_id"] and f["language"] == "c"


def test_kernel_side_still_refuses_uprobes_without_the_flag():
    from resolver import ExprError
    with pytest.raises(ExprError, match="uprobes"):
        translate(None, ["P /bin/true:main"])
    assert not os.path.exists("/nonexistent.db")


def test_library_without_dwarf_untyped_args():
    """libssl has no debug file here: bare registers and $retval need no types."""
    ssl = find_library("libssl.so.3")
    off = _elf_file_offset(ssl, "SSL_write")
    r, p = translate(None, ["R libssl.so.3:SSL_write ret=$retval", "P libssl:SSL_write n=S%2"],
                     uprobes=True)
    assert r.line == f"r:r0 {ssl}:0x{off:x} ret=$retval"
    assert p.line == f"p:p1 {ssl}:0x{off:x} n=%dx:s64"
