"""The Go resolver against the toolchain's own view of the unstripped twin, for real binaries:
every toolchain x every variant of tlsapp, the gRPC and x/net programs for three toolchains,
arm64 cross builds.  CI runs three toolchains (Debian's 1.19, 1.24, the newest); the other
cases are the `sweep` (`./dev.sh sweep`).  Oracles: `go version -m`, `go tool nm -size`, `go tool objdump` (RETs),
pyelftools over the twin's DWARF (offsets)."""
from __future__ import annotations

import functools
import re

import pytest

from tests.support.go_builds import VARIANTS, binary, go_tool, go_version, twin, tc
from resolver.golang.offsets import STANDARD_OFFSETS, module_of, split_key
from resolver.golang.report import STANDARD_ITABS, STANDARD_SYMBOLS, analyze_go_binary

from scripts.gen_go_offsets import dwarf_structs

CASES = [(m, "tlsapp", v) for m in tc.ALL_MINORS for v in VARIANTS]
CASES += [(m, p, v) for m in ("1.19", "1.24", "1.27") for p in ("grpcapp", "xnetapp")
          for v in ("dwarf", "strip", "nobi-strip")]
CASES += [(m, "tlsapp", v) for m in ("1.21", "1.27") for v in ("arm64", "arm64-strip")]
CI_MINORS = ("1.19", "1.24", tc.ALL_MINORS[-1])
CASES = [pytest.param(*c, id=f"go{c[0]}-{c[1]}-{c[2]}",
                      marks=() if c[0] in CI_MINORS else pytest.mark.sweep) for c in CASES]
EXTRA_SYMBOLS = ["main.countMe", "main.main", "runtime.goexit", "runtime.gopanic"]


@functools.lru_cache(maxsize=None)
def version_m(minor, path):
    out = go_tool(minor, "version", "-m", path)
    lines = out.splitlines()
    version = lines[0].split(": ", 1)[1].strip()
    deps, mpath = {}, None
    for line in lines[1:]:
        parts = line.strip().split("\t")
        if parts[0] == "path":
            mpath = parts[1]
        elif parts[0] == "dep":
            deps[parts[1]] = parts[2]
    return version, mpath, deps


@functools.lru_cache(maxsize=None)
def nm(minor, path):
    out = {}
    for line in go_tool(minor, "tool", "nm", "-size", path).splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            out.setdefault(parts[3], (int(parts[0], 16), int(parts[1]), parts[2]))
    return out


@functools.lru_cache(maxsize=None)
def objdump_rets(minor, path, names):
    rx = "^(" + "|".join(re.escape(n) for n in names) + ")$"
    rets, cur = {}, None
    for line in go_tool(minor, "tool", "objdump", "-s", rx, path).splitlines():
        if line.startswith("TEXT "):
            cur = line[5:].split("(SB)")[0]
            rets[cur] = []
        elif cur and "\t" in line:
            cols = [c.strip() for c in line.split("\t") if c.strip()]   # file:line addr hex insn
            if len(cols) >= 4 and re.match(r"^RET\b", cols[3]):
                rets[cur].append(int(cols[1], 16))
    return rets


@functools.lru_cache(maxsize=None)
def dwarf_truth(path):
    return dwarf_structs(path, {split_key(k)[0] for k in STANDARD_OFFSETS})


def file_offset(path, addr):
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as fh:
        for seg in ELFFile(fh).iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= addr < seg["p_vaddr"] + seg["p_filesz"]:
                return addr - seg["p_vaddr"] + seg["p_offset"]


@pytest.mark.parametrize("minor,program,variant", CASES)
def test_against_toolchain(minor, program, variant):
    path = binary(minor, program, variant)
    truth = twin(minor, program, variant)
    names = STANDARD_SYMBOLS + EXTRA_SYMBOLS
    rep = analyze_go_binary(path, symbols=names)
    table = dict(nm(minor, truth))
    for n in names:        # assembly functions: "runtime.goexit.abi0" in the symbol table
        if n not in table and n + ".abi0" in table:
            table[n] = table[n + ".abi0"]

    # version, modules
    tv, tpath, tdeps = version_m(minor, truth)
    assert rep.version == tv == go_version(minor)
    expected_source = {"nobi": "symtab:runtime.buildVersion",
                       "nobi-strip": "scan:runtime.buildVersion"}.get(variant, "buildinfo")
    assert rep.version_source == expected_source
    if expected_source == "buildinfo":
        assert rep.modules["path"] == tpath
        assert rep.modules["deps"] == tdeps
    assert rep.arch == ("arm64" if variant.startswith("arm64") else "amd64")
    assert rep.pie == (variant == "pie")

    # functions: address, size, file offset; absent ones are absent
    for n in names:
        got = rep.symbols[n]
        if n not in table:
            assert got is None, n
            continue
        addr, size, _ = table[n]
        assert got is not None, n
        assert (got["address"], got["size"]) == (addr, size), n
        assert got["file_offset"] == file_offset(truth, addr), n
        assert got["source"] == ("symtab" if variant in ("dwarf", "pie", "nobi", "arm64") else "pclntab")

    # returns: every RET objdump shows, as file offsets
    present = tuple(sorted(n for n in names if n in table))
    rets = objdump_rets(minor, truth, tuple(n + suffix for n in present for suffix in ("", ".abi0")))
    rets = {n: rets.get(n, rets.get(n + ".abi0")) for n in present}
    for n in present:
        want = sorted(file_offset(truth, a) for a in rets[n])
        assert rep.symbols[n]["returns"] == want, n
        assert rep.symbols[n]["no_return"] == (not want)
    assert rep.symbols["runtime.goexit"]["no_return"]       # CALL goexit1; never returns
    assert rep.symbols["main.countMe" if program == "tlsapp" else "main.main"]["returns"]

    # struct offsets: DWARF of the twin; descriptors or the table for binaries without DWARF
    dw = dwarf_truth(truth)
    has_dwarf = variant in ("dwarf", "pie", "nobi", "arm64")
    table_source = "table:" + go_version(minor)
    for key in STANDARD_OFFSETS:
        sname, field = split_key(key)
        got = rep.offsets[key]
        want = dw.get(sname, {}).get(field)
        assert not got.get("conflicts"), (key, got)
        if has_dwarf and want is not None:
            assert (got["offset"], got["source"]) == (want, "dwarf"), key
        elif got["source"] == "typeinfo":
            assert got["offset"] == want, key
        elif module_of(sname) is None:
            # the generated table must agree with this build's DWARF where it has the struct
            if want is not None:
                assert (got["offset"], got["source"]) == (want, table_source), key
            elif got["offset"] is None:
                assert got["source"] == "unknown" and got["reason"], key
            else:
                assert got["source"] == table_source, key
        else:
            # GOPATH builds name no module versions: never guessed from the table
            assert got["offset"] is None and got["source"] == "unknown", (key, got)
        for other in got.get("checked", []):
            assert other in ("typeinfo", table_source), (key, got)

    # itabs: the linker's go:itab./go.itab. symbols (Go 1.27 emits none: then the itab's first
    # method must be the type's own method)
    for name in STANDARD_ITABS:
        got = rep.itabs[name]
        sym = next((table[p + name][0] for p in ("go:itab.", "go.itab.") if p + name in table), None)
        if sym is not None:
            assert got == sym, name
        elif minor != "1.27":
            assert got is None, name
    if minor == "1.27":
        by_addr = {a: n for n, (a, _s, t) in table.items() if t in "Tt"}
        import struct
        with open(truth, "rb") as fh:
            data = fh.read()
        for name, addr in rep.itabs.items():
            if addr is None:
                continue
            off = file_offset(truth, addr + 24 if rep.arch in ("amd64", "arm64") else addr + 12)
            fun0 = struct.unpack_from("<Q", data, off)[0]
            typ = name.split(",")[0]            # *net.TCPConn -> net.(*TCPConn).
            pkg, _, tname = typ[1:].rpartition(".")
            assert by_addr[fun0].startswith(f"{pkg}.(*{tname}).") or by_addr[fun0].startswith("net.(*conn)."), (name, by_addr[fun0])
        assert rep.itabs["*net.TCPConn,net.Conn"] is not None
