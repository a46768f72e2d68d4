"""`dbhive header`: a kernel's types as a C header (vmlinux.h), for the Debian 6.1 kernel's DB
and this machine's kernel's DB (both from the kernels' own BTF).

The header compiles with clang -target bpf (Debian's clang 14 and clang 16, warnings as
errors), and what the compiler makes of it is the kernel, by oracles that know nothing of our
emitter (tests/support/cheader_check.py): _Static_asserts made from pahole's view of the
kernel's BTF (the size of every struct and union, the offset and size of every member) and
from bpftool's (every enumerator's value), and pahole's view of the compiled object against
pahole's view of the kernel, layout by layout, bitfields included.  Each check fails on a
header damaged in the way it looks at.  bpftool's own header of the same BTF goes through the
same checks in bench/bench_cheader.py (the anchor)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

from dbhive import schema
from tests.support import cheader_check as C
from tests.support import need_tool
from tests.support.pahole_oracle import pahole_layouts

DBHIVE = os.path.join(os.path.dirname(sys.executable), "dbhive")
KERNELS = {"debian-6.1": ("debian_db", "debian_vmlinux_btf"),
           "running": ("running_db", "running_btf")}
_TOP = re.compile(r"^(struct|union) (\w+) \{\n(.*?)^\}( __attribute__\(\(packed\)\))?;$",
                  re.M | re.S)


def dbhive(*args, check=True):
    proc = subprocess.run([DBHIVE, *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"dbhive {args} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


@pytest.fixture(scope="module", params=sorted(KERNELS))
def kernel(request, tmp_path_factory):
    """A kernel's DB, its BTF (the oracles read that), and the header `dbhive header` wrote."""
    for tool in ("clang", "pahole", "bpftool"):
        need_tool(tool)
    db_fixture, btf_fixture = KERNELS[request.param]
    db, btf = request.getfixturevalue(db_fixture), request.getfixturevalue(btf_fixture)
    d = tmp_path_factory.mktemp(f"head-{request.param}")
    header = str(d / "vmlinux.h")
    proc = dbhive("header", db, "-o", header)
    assert proc.stdout == "" and proc.stderr == ""
    with open(header) as fh:
        text = fh.read()
    return SimpleNamespace(name=request.param, db=db, btf=btf, header=header, dir=d, text=text,
                           layouts=pahole_layouts(btf, "btf"), shared=C.shared_tags(btf))


def asserts_of(k) -> tuple[str, int]:
    layout, n = C.layout_asserts(k.layouts, k.shared)
    enums, m = C.enum_asserts(k.btf)
    return layout + enums, n + m


@pytest.mark.parametrize("clang", C.CLANGS)
def test_header_compiles_for_bpf(kernel, clang):
    need_tool(clang)
    proc = C.compile_header(kernel.header, clang=clang)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr == ""                                # not even a warning


def test_header_is_a_vmlinux_h(kernel):
    """Guarded, CO-RE's preserve_access_index pushed and popped (as bpftool writes it), and
    named for its kernel."""
    meta = schema.read_meta(kernel.db)
    lines = kernel.text.splitlines()
    assert lines[0].startswith(f"/* vmlinux.h of {meta['release']} {meta['arch']} ")
    assert lines[2:4] == ["#ifndef __VMLINUX_H__", "#define __VMLINUX_H__"]
    assert lines[-1] == "#endif /* __VMLINUX_H__ */"
    assert kernel.text.count("#pragma clang attribute push (__attribute__((preserve_access_"
                             "index)), apply_to = record)") == 1
    assert kernel.text.count("#pragma clang attribute pop") == 1


def test_every_size_offset_and_enumerator_is_the_kernels(kernel):
    """pahole's and bpftool's view of the kernel's BTF as _Static_asserts, compiled with the
    header: all hold."""
    text, n = asserts_of(kernel)
    assert n > len(kernel.layouts)
    proc = C.compile_header(kernel.header, text, error_limit=False)
    assert proc.returncode == 0, (C.failed_asserts(proc)[:20], proc.stderr[-3000:])


def test_compiled_layouts_are_the_kernels(kernel):
    """pahole on what clang made of the header (every type's DWARF) against pahole on the
    kernel's BTF: the same layouts, bitfields included, for every struct and union."""
    compiled = C.compiled_layouts(kernel.header)
    assert C.layout_differences(kernel.layouts, compiled) == []


def test_the_checks_fail_on_a_damaged_header(kernel, tmp_path):
    """One array shortened, one packed attribute dropped, one bitfield narrowed: each is
    caught by the check that looks at it, naming the struct."""
    if kernel.name != "debian-6.1":
        pytest.skip("one kernel is enough to show the checks fail")
    text, _ = asserts_of(kernel)
    asserted = {f"{kind} {name}" for kind, name in
                re.findall(r"_Static_assert\(sizeof\((struct|union) (\w+)\) ==", text)}
    tops = [(f"{m.group(1)} {m.group(2)}", m) for m in _TOP.finditer(kernel.text)]

    def damage(pick, change) -> tuple:
        key, m = next((key, m) for key, m in tops if key in asserted and pick(m))
        body = change(m.group(0))
        bad = tmp_path / f"damaged-{len(os.listdir(tmp_path))}.h"
        bad.write_text(kernel.text[:m.start()] + body + kernel.text[m.end():])
        return key, str(bad)

    array = re.compile(r"^\t(char|u8|__u8|unsigned char) (\w+)\[(\d\d+)\];$", re.M)
    key, bad = damage(lambda m: array.search(m.group(3)), lambda body: array.sub(
        lambda a: f"\t{a.group(1)} {a.group(2)}[{int(a.group(3)) - 1}];", body, count=1))
    proc = C.compile_header(bad, text, error_limit=False)
    assert proc.returncode != 0 and any(f.startswith(key + ":") for f in
                                        C.failed_asserts(proc)), (key, proc.stderr[-2000:])
    assert any(d.startswith(key + ":") for d in
               C.layout_differences(kernel.layouts, C.compiled_layouts(bad)))

    key, bad = damage(lambda m: m.group(4), lambda body: body.replace(
        "} __attribute__((packed));", "};"))
    proc = C.compile_header(bad, text, error_limit=False)
    assert any(f.startswith(key + ":") for f in C.failed_asserts(proc)), key

    two = re.compile(r"^\t(\w[\w ]*) (\w+): (\d+);\n\t\w[\w ]* \w+: \d+;$", re.M)
    key, bad = damage(lambda m: (n := two.search(m.group(3))) and int(n.group(3)) > 1,
                      lambda body: two.sub(lambda b: b.group(0).replace(
                          f"{b.group(2)}: {b.group(3)};", f"{b.group(2)}: "
                          f"{int(b.group(3)) - 1};", 1), body, count=1))
    assert any(d.startswith(key + ":") for d in
               C.layout_differences(kernel.layouts, C.compiled_layouts(bad))), key
    # ... and a wrong enumerator value
    name, value = next((n, v) for n, v in
                       re.findall(r'_Static_assert\((\w+) == (-?\d+), "enumerator', text)
                       if re.search(rf"^\t{n} = {v},$", kernel.text, re.M))
    bad = tmp_path / "damaged-enum.h"
    bad.write_text(re.sub(rf"^\t{name} = {value},$", f"\t{name} = {int(value) + 1},",
                          kernel.text, count=1, flags=re.M))
    proc = C.compile_header(str(bad), text, error_limit=False)
    assert C.failed_asserts(proc) == [f"enumerator {name}"]


def test_header_command_output_is_stable_and_errors_are_one_line(kernel, tmp_path):
    if kernel.name != "running":
        pytest.skip("once")
    again = dbhive("header", kernel.db).stdout             # standard output
    assert again == kernel.text
    d = tmp_path / "dir"
    d.mkdir()
    for args, message in (
            (["header", kernel.db, "-o", d], f"{d}: is a directory; refusing to replace it "
                                             f"with a file"),
            (["header", kernel.db, "-o", tmp_path / "no" / "x.h"],
             f"{tmp_path / 'no' / 'x.h'}: directory {tmp_path / 'no'} does not exist"),
            (["header", tmp_path / "missing.db"],
             f"{tmp_path / 'missing.db'}: no such file, and no DB of that release in")):
        proc = dbhive(*args, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith(f"dbhive: error: {message}"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert os.listdir(d) == []


def test_build_with_header_beside_a_db(kernel, tmp_path):
    """`dbhive build --out X.db --with-header` writes X.h: the header of the DB it wrote."""
    if kernel.name != "running":
        pytest.skip("once")
    out = tmp_path / "info.db"
    dbhive("build", kernel.btf, "--out", out, "--with-header", "--no-progress")
    written = (tmp_path / "info.h").read_text()
    assert written == dbhive("header", out).stdout
    assert C.compile_header(str(tmp_path / "info.h")).returncode == 0


def test_a_db_no_header_can_describe_is_a_one_line_error(kernel, tmp_path):
    """A 32-bit kernel (the BPF target is 64-bit), a struct whose members overlap (a damaged
    DB): one line naming what, exit 1, nothing written."""
    if kernel.name != "running":
        pytest.skip("once")
    import shutil
    import sqlite3
    cases = {
        "i686": ("UPDATE meta SET value = 'i686' WHERE key = 'arch'",
                 "a C header is laid out for the 64-bit BPF target; this kernel's pointers "
                 "are 4 bytes"),
        "overlap": ("UPDATE kt_members SET bit_offset = 0 WHERE idx = 1 AND type_id = "
                    "(SELECT id FROM kt_types WHERE kind = 'struct' AND name = 'list_head')",
                    "struct list_head (type id "),
    }
    for name, (sql, message) in cases.items():
        db = tmp_path / f"{name}.db"
        shutil.copyfile(kernel.db, db)
        conn = sqlite3.connect(db)
        with conn:
            assert conn.execute(sql).rowcount == 1
        conn.close()
        out = tmp_path / f"{name}.h"
        proc = dbhive("header", db, "-o", out, check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"dbhive: error: {db}: {message}"), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists()
