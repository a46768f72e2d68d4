"""Checks of a C header (dbhive/cheader.py, or bpftool's `format c`) against oracles that
know nothing of the code that wrote it:

  * `compile_header`: clang -target bpf compiles a .c that includes it (the way a BPF
    program does, warnings as errors);
  * `layout_asserts`: a C file of _Static_asserts made from pahole's view of the kernel (its
    raw BTF, or its vmlinux's DWARF): the sizeof of every struct and union, the offsetof and
    sizeof of every member that is not a bitfield.  It compiles together with the header
    only if the compiler lays every one of them out as the kernel has it;
  * `compiled_layouts` + `layout_differences`: pahole's view of what clang made of the
    header (the DWARF of an object built with every type in it) against pahole's view of
    the kernel, layout by layout, bitfields included.

Names: the header may call a second layout of a name `foo___2`; pahole prints each distinct
layout of a name once.  So layouts are compared per name as sets, and the asserts cover the
names pahole prints one layout for.
"""
from __future__ import annotations

import os
import re
import subprocess

from tests.support.pahole_compare import oracle_view
from tests.support.pahole_oracle import pahole_layouts

CLANGS = ("clang", "clang-16")         # Debian's default (14) and its newest


def _include(header: str, extra: str = "") -> str:
    """A .c beside the header that includes it (and `extra` after)."""
    c = os.path.splitext(header)[0] + ".check.c"
    with open(c, "w") as fh:
        fh.write(f'#include "{os.path.basename(header)}"\n{extra}')
    return c


def compile_header(header: str, extra: str = "", flags=("-O2", "-g", "-Wall", "-Werror"),
                   error_limit: bool = True, clang: str = "clang") -> subprocess.CompletedProcess:
    """clang -target bpf -c of a .c including `header` (then `extra`)."""
    c = _include(header, extra)
    cmd = [clang, "-target", "bpf", *flags, "-c", c, "-o", c[:-2] + ".o"]
    if not error_limit:
        cmd.insert(3, "-ferror-limit=0")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _designator(layout, path: str) -> str:
    """`a.b` as an offsetof() designator: `a[0].b` when `a` is an array (pahole describes
    element 0 of an array of in-place structs)."""
    dims = {m.path: m.array_dims for m in layout.members}
    parts = path.split(".")
    out = []
    for i, part in enumerate(parts):
        prefix = ".".join(parts[:i + 1])
        out.append(part + ("[0]" * len(dims.get(prefix, ())) if i < len(parts) - 1 else ""))
    return ".".join(out)


def shared_tags(btf: str) -> set:
    """Tag names a kernel's BTF defines more than once (two layouts of a struct name, a
    struct and an enum of one name: `bpftool btf dump`): any header must rename all but
    one, so pahole's name for them is ambiguous."""
    from tests.support.bpftool_oracle import bpftool_dump
    count: dict = {}
    for r in bpftool_dump(btf):
        if r.name and (r.kind in ("STRUCT", "UNION") or
                       r.kind in ("ENUM", "ENUM64") and r.items):
            count[r.name] = count.get(r.name, 0) + 1
    return {name for name, n in count.items() if n > 1}


def layout_asserts(layouts: dict, skip=()) -> tuple[str, int]:
    """(C text, number of asserts) for pahole's layouts {"struct NAME": [Layout]}: one
    per size, member offset and member size of each name with one layout (not in `skip`,
    see `shared_tags`)."""
    lines, n = [], 0
    for key, found in sorted(layouts.items()):
        if len(found) != 1 or key.split(" ", 1)[1] in skip:
            continue
        lay = found[0]
        lines.append(f'_Static_assert(sizeof({key}) == {lay.size}, "{key}: size");')
        n += 1
        for m in lay.members:
            if m.is_bitfield:
                continue
            d = _designator(lay, m.path)
            lines.append(f'_Static_assert(__builtin_offsetof({key}, {d}) == {m.offset}, '
                         f'"{key}: offset of {m.path}");')
            lines.append(f'_Static_assert(sizeof((({key} *)0)->{d}) == {m.size}, '
                         f'"{key}: size of {m.path}");')
            n += 2
    return "\n".join(lines) + "\n", n


def enum_asserts(btf: str) -> tuple[str, int]:
    """(C text, number of asserts): the value of every enumerator of a kernel's BTF whose
    name it has once (`bpftool btf dump`; a header renames the others)."""
    from tests.support.bpftool_oracle import bpftool_dump
    values: dict = {}
    for r in bpftool_dump(btf):
        if r.kind in ("ENUM", "ENUM64"):
            for name, attrs in r.items:
                values.setdefault(name, []).append(attrs["val"])
    lines = [f'_Static_assert({name} == {vals[0]}, "enumerator {name}");'
             for name, vals in sorted(values.items()) if len(vals) == 1]
    return "\n".join(lines) + "\n", len(lines)


def failed_asserts(proc: subprocess.CompletedProcess) -> list[str]:
    """The messages of the _Static_asserts clang reported failing."""
    return re.findall(r'static_assert failed due to requirement .*? "(.*?)"', proc.stderr)


def compiled_layouts(header: str) -> dict:
    """pahole's layouts of every struct/union clang makes of `header` (an object built with
    -fno-eliminate-unused-debug-types: the DWARF of every type declared)."""
    proc = compile_header(header, flags=("-O0", "-g", "-fno-eliminate-unused-debug-types"))
    if proc.returncode != 0:
        raise AssertionError(f"{header} does not compile: {proc.stderr[-2000:]}")
    return pahole_layouts(os.path.splitext(header)[0] + ".check.o", "dwarf", cache=False)


def _normalized(layouts: dict) -> dict:
    """{name: {(size, members)}}, a `___N` suffix dropped, and a bitfield as wide as its type
    at its type's place counted as the plain member it is (clang's DWARF does not mark
    `u32 x:32` as a bitfield, BTF does)."""
    out: dict = {}
    for key, found in layouts.items():
        base = re.sub(r"___\d+$", "", key)
        for lay in found:
            view = []
            for path, off, size, bit_total, bits, dims in oracle_view(lay):
                if bits is not None and bits == 8 * size and bit_total == 8 * off:
                    bit_total = bits = None
                view.append((path, off, size, bit_total, bits, tuple(dims)))
            out.setdefault(base, set()).add((lay.size, tuple(view)))
    return out


def layout_differences(kernel: dict, compiled: dict) -> list[str]:
    """Names whose layouts differ between the kernel's view and the compiled header's."""
    want, got = _normalized(kernel), _normalized(compiled)
    out = []
    for name in sorted(want.keys() | got.keys()):
        a, b = want.get(name, set()), got.get(name, set())
        if a != b:
            out.append(f"{name}: kernel {sorted(a - b)[:1]} header {sorted(b - a)[:1]}")
    return out
