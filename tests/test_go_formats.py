"""Edge cases of the Go readers: non-Go, corrupt, unknown pclntab magic, a future version,
and the pre-1.18 pointer build-info format in both pointer sizes and endiannesses (synthetic
ELF files made here, since no such toolchain is installable)."""
from __future__ import annotations

import shutil
import struct

from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from tests.support.go_builds import binary
from dbhive.elf import ElfFile as ElfImage
from resolver.golang.buildinfo import MAGIC, read_buildinfo
from resolver.golang.cli import go_command
from resolver.golang.report import analyze_go_binary


def run(*args):
    res = CliRunner().invoke(go_command, list(args))
    assert "Traceback" not in res.output
    return res


def test_not_go(tmp_path):
    res = run("/bin/ls")
    assert res.exit_code == 1 and "not a Go binary" in res.output
    text = tmp_path / "t.txt"
    text.write_text("hello")
    res = run(str(text))
    assert res.exit_code == 1 and "not an ELF file" in res.output
    assert run(str(tmp_path / "missing")).exit_code == 1
    assert run().exit_code == 2                       # neither binary nor --pid


def test_corrupt_truncated(tmp_path):
    src = binary("1.24", "tlsapp", "sw")
    bad = tmp_path / "trunc"
    with open(src, "rb") as fh:
        bad.write_bytes(fh.read(3 * 1024 * 1024))
    res = run(str(bad), "--json")
    assert res.exit_code in (0, 1)
    bad.write_bytes(open(src, "rb").read(100))
    res = run(str(bad))
    assert res.exit_code == 1


def _patch(path, old: bytes, new: bytes, where=None):
    data = bytearray(open(path, "rb").read())
    i = data.find(old) if where is None else where
    assert i >= 0
    data[i:i + len(old)] = new
    open(path, "wb").write(bytes(data))


def test_unknown_pclntab_magic(tmp_path):
    exe = tmp_path / "m"
    shutil.copy(binary("1.24", "tlsapp", "strip"), exe)
    sec = ElfImage(str(exe)).section(".gopclntab")
    _patch(exe, struct.pack("<I", 0xFFFFFFF1), struct.pack("<I", 0xFFFFFFF5), where=sec.offset)
    res = run(str(exe))
    assert res.exit_code == 1 and "unknown pclntab magic 0xfffffff5" in res.output


def test_future_go_version(tmp_path):
    exe = tmp_path / "future"
    shutil.copy(binary("1.24", "tlsapp", "strip"), exe)
    sec = ElfImage(str(exe)).section(".go.buildinfo")
    at = open(exe, "rb").read().find(b"go1.24.11", sec.offset)   # the inline build info copy
    _patch(exe, b"go1.24.11", b"go1.99.11", where=at)
    rep = analyze_go_binary(str(exe))
    assert rep.version == "go1.99.11" and rep.version_source == "buildinfo"
    # no table for go1.99: the binary's own type descriptors still answer, as its DWARF twin
    from scripts.gen_go_offsets import dwarf_structs
    truth = dwarf_structs(binary("1.24", "tlsapp", "dwarf"), {"runtime.g"})
    goid = rep.offsets["runtime.g.goid"]
    assert goid == {"offset": truth["runtime.g"]["goid"], "source": "typeinfo"}
    # a struct without a descriptor: unknown, saying why for both
    cc = rep.offsets["net/http.http2clientConnReadLoop.cc"]
    assert cc["offset"] is None and cc["source"] == "unknown"
    assert "go1.99" in cc["reason"] and "no type descriptor" in cc["typeinfo"]
    assert rep.symbols["runtime.casgstatus"]["returns"]     # everything else still works


def _elf_with_blob(is64: bool, big: bool, blob_at: int, blob: bytes, base=0x10000) -> bytes:
    e = ">" if big else "<"
    ehsize, phsize = (64, 56) if is64 else (52, 32)
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 2 if big else 1, 1]) + b"\0" * 9
    size = blob_at + len(blob)
    if is64:
        hdr = ident + struct.pack(e + "HHIQQQIHHHHHH", 2, 62, 1, base, ehsize, 0, 0, ehsize,
                                  phsize, 1, 64, 0, 0)
        ph = struct.pack(e + "IIQQQQQQ", 1, 6, 0, base, base, size, size, 0x1000)
    else:
        hdr = ident + struct.pack(e + "HHIIIIIHHHHHH", 2, 3, 1, base, ehsize, 0, 0, ehsize,
                                  phsize, 1, 40, 0, 0)
        ph = struct.pack(e + "IIIIIIII", 1, 0, base, base, size, size, 6, 0x1000)
    out = bytearray(hdr + ph)
    out += b"\0" * (blob_at - len(out))
    return bytes(out + blob)


@settings(max_examples=30, deadline=None)
@given(is64=st.booleans(), big=st.booleans(),
       version=st.from_regex(r"go1\.(1[0-7]|[2-9])(\.[0-9]{1,2})?", fullmatch=True),
       path=st.from_regex(r"[a-z]{1,10}(/[a-z]{1,10}){0,3}", fullmatch=True))
def test_pointer_format_buildinfo(tmp_path_factory, is64, big, version, path):
    """Go < 1.18: two pointers at +16 to Go string headers (ptr, len)."""
    e, p = (">" if big else "<"), (8 if is64 else 4)
    w = e + ("Q" if is64 else "I")
    base, at = 0x10000, 0x100
    modinfo = ("0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6" +
               f"path\t{path}\nmod\t{path}\t(devel)\t\ndep\tgolang.org/x/net\tv0.7.0\th1:x=\n" +
               "\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2").encode("latin-1")
    hdr = MAGIC + bytes([p, 1 if big else 0]) + struct.pack(w, base + at + 64) + \
        struct.pack(w, base + at + 64 + 2 * p)
    hdr += b"\0" * (64 - len(hdr))
    strs_at = at + 64 + 4 * p
    vbytes, mbytes = version.encode(), modinfo
    pair = e + ("QQ" if is64 else "II")
    sh = struct.pack(pair, base + strs_at, len(vbytes)) + \
        struct.pack(pair, base + strs_at + len(vbytes), len(mbytes))
    blob = hdr + sh + vbytes + mbytes
    f = tmp_path_factory.mktemp("bi") / "elf"
    f.write_bytes(_elf_with_blob(is64, big, at, blob))
    info = read_buildinfo(ElfImage(str(f)))
    assert info is not None and not info.inline
    assert (info.version, info.path, info.ptr_size, info.big_endian) == (version, path, p, big)
    assert info.deps == {"golang.org/x/net": "v0.7.0"}


@settings(max_examples=20, deadline=None)
@given(is64=st.booleans(), big=st.booleans(),
       version=st.from_regex(r"go1\.(1[89]|2[0-9])(\.[0-9]{1,2})?", fullmatch=True))
def test_inline_format_buildinfo(tmp_path_factory, is64, big, version):
    p = 8 if is64 else 4
    hdr = MAGIC + bytes([p, 2 | (1 if big else 0)]) + b"\0" * 16
    blob = hdr + bytes([len(version)]) + version.encode() + b"\0"
    f = tmp_path_factory.mktemp("bi") / "elf"
    f.write_bytes(_elf_with_blob(is64, big, 0x80, blob))
    info = read_buildinfo(ElfImage(str(f)))
    assert info.inline and info.version == version and info.modinfo == ""


def test_func_record_outside_pclntab(tmp_path):
    """A functab entry whose record offset points past the pclntab (found by the fuzzer):
    that function is not found, everything else is, no traceback."""
    from resolver.golang.pclntab import find_pclntab
    exe = tmp_path / "far"
    shutil.copy(binary("1.24", "tlsapp", "strip"), exe)
    img = ElfImage(str(exe))
    tab = find_pclntab(img)
    sec = img.section(".gopclntab")
    names = {f.name: i for i, f in enumerate(tab.funcs()) if f.name in
             ("runtime.casgstatus", "runtime.newproc1")}
    i = names["runtime.casgstatus"]
    at = sec.offset + tab.functab_off + i * tab._entry_size + 4      # (entryoff, funcoff)
    _patch(exe, open(exe, "rb").read()[at:at + 4], struct.pack("<I", 0xFFFF0000), where=at)
    rep = analyze_go_binary(str(exe))
    assert rep.symbols["runtime.casgstatus"] is None
    assert rep.symbols["runtime.newproc1"]["returns"]
