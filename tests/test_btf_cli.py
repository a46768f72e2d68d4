"""`dbhive btf` and `dbhive build --with-btf` as a user runs them, the lbc `btf` command for
a DWARF-built DB, and bad input: a DB of another schema version, an object without
.BTF.ext, corrupt objects -- one line, an exit code, no traceback, nothing written."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tarfile

import pytest

from dbhive import schema
from dbhive.btf import ext as E
from dbhive.btf import make
from scripts.realdata import DEBIAN_RELEASE
from tests.support.btf_compare import canonical, compare
from tests.support.btfout import core_fixtures

DBHIVE = [sys.executable, "-m", "dbhive.cli"]


def run(*args, cwd=None):
    p = subprocess.run(DBHIVE + [str(a) for a in args], capture_output=True, text=True,
                       cwd=cwd)
    return p.returncode, p.stdout, p.stderr


def assert_one_line_error(rc, out, err, code, *words):
    assert rc == code, (rc, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dbhive: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


def nothing_left(d) -> bool:
    return not any(name.startswith(".tmp-") or name.endswith(".btf")
                   for _, _, files in os.walk(d) for name in files)


@pytest.fixture(scope="module")
def objects(running_db, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("cli") / "ours.btf"
    path.write_bytes(make.full_btf(make.Kernel(schema.read_meta(running_db), db=running_db))
                     .emitted.data)
    return core_fixtures(str(path))


@pytest.fixture(scope="module")
def hive(running_db, debian_db, tmp_path_factory) -> str:
    """A hive of two kernels (this one and the Debian 6.1, both from their BTF)."""
    h = tmp_path_factory.mktemp("hive")
    for db in (running_db, debian_db):
        m = schema.read_meta(db)
        from dbhive.hive import db_path
        dest = db_path(str(h), m["arch"], m["distro"], m["release"], m.get("flavour"))
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(db, dest)
    return str(h)


def test_full_btf_of_a_db(running_db, running_btf, tmp_path):
    out = tmp_path / "vmlinux.btf"
    rc, stdout, err = run("btf", running_db, "-o", out, "--json")
    assert rc == 0, err
    got = json.loads(stdout)
    assert got["written"] == [str(out)]
    (k,) = got["kernels"]
    assert k["bytes"] == out.stat().st_size and k["records"]["STRUCT"] > 10000
    d = compare(canonical(str(out)), canonical(running_btf))
    assert all(not a and not b for a, b in d.values())


def test_release_in_the_hive_and_a_profile(hive, tmp_path):
    out = tmp_path / "old.btf"
    rc, stdout, err = run("btf", DEBIAN_RELEASE, "--hive", hive, "-o", out,
                          "--profile", "libbpf-0.5")
    assert rc == 0, err
    assert f"{DEBIAN_RELEASE} x86_64: BTF" in stdout and "profile libbpf-0.5" in stdout
    assert "warning: " in err and "enum" in err       # the ENUM64s it had to change
    assert "ENUM64" not in canonical(str(out)).kinds
    rc, _, err = run("btf", "9.9.9-none", "--hive", hive, "-o", tmp_path / "x.btf")
    assert_one_line_error(rc, "", err, 3, "9.9.9-none", "no DB of that release")


def test_every_kernel_of_a_hive_minimal_btf_and_one_archive(hive, objects, tmp_path):
    outdir, archive = tmp_path / "min", tmp_path / "min.tar.xz"
    rc, stdout, err = run("btf", "--hive", hive, "--all", "--for", objects["core_task"],
                          "--for", objects["core_sock"], "-o", outdir, "--archive", archive)
    assert rc == 0, err
    files = sorted(str(p.relative_to(outdir)) for p in outdir.rglob("*.btf"))
    assert len(files) == 2 and f"debian/x86_64/{DEBIAN_RELEASE}.btf" in files
    with tarfile.open(archive) as tar:
        assert sorted(tar.getnames()) == files
        for name in files:
            assert tar.extractfile(name).read() == (outdir / name).read_bytes()
    # each equals the minimal BTF made for that kernel alone
    db = next(e.path for e in __import__("dbhive.hive", fromlist=["x"]).iter_dbs(hive)
              if DEBIAN_RELEASE in e.path)
    one = tmp_path / "one.btf"
    rc, _, err = run("btf", db, "--for", objects["core_task"], "--for", objects["core_sock"],
                     "-o", one)
    assert rc == 0, err
    assert one.read_bytes() == (outdir / f"debian/x86_64/{DEBIAN_RELEASE}.btf").read_bytes()
    assert "relocations satisfied" in stdout


def test_raw_btf_input_and_big_endian(running_btf, tmp_path):
    out = tmp_path / "be.btf"
    rc, stdout, err = run("btf", running_btf, "-o", out, "--byte-order", "big")
    assert rc == 0, err
    assert out.read_bytes()[:2] == b"\xeb\x9f"
    assert "big-endian" in stdout


def test_build_with_btf_keeps_the_kernels_own_and_says_so(running_btf, tmp_path):
    h, usrlib = tmp_path / "hive", tmp_path / "usr-lib-btf"
    rc, stdout, err = run("build", running_btf, "--hive", h, "--with-btf", "--btf-dir",
                          usrlib, "--json")
    assert rc == 0, err
    meta = json.loads(stdout)["meta"]
    with open(running_btf, "rb") as fh:
        own = fh.read()
    assert meta["btf_origin"] == "kernel"
    assert meta["btf_sha256"] == hashlib.sha256(own).hexdigest()
    assert (h / meta["btf_file"]).read_bytes() == own
    assert (usrlib / f"vmlinux-{meta['release']}.btf").read_bytes() == own
    with tarfile.open(h / (meta["btf_file"][:-4] + ".btf.tar.xz")) as tar:
        assert tar.getnames() == [f"{meta['release']}.btf"]


# ---- bad input ------------------------------------------------------------------------------

def test_a_db_of_another_schema_version(running_db, objects, tmp_path):
    old = tmp_path / "old.db"
    shutil.copy(running_db, old)
    with sqlite3.connect(old) as c:
        c.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    for extra in ([], ["--for", objects["core_task"]]):
        rc, out, err = run("btf", old, "-o", tmp_path / "x.btf", *extra)
        assert_one_line_error(rc, out, err, 3, "schema version 1", "rebuild")
    assert nothing_left(tmp_path)


def _rename_section(src: str, dst: str, old: bytes, new: bytes) -> None:
    """Copy an ELF object with one section renamed in its section-name table."""
    data = bytearray(open(src, "rb").read())
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    strtab_off, = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)
    for i in range(shnum):
        name_off, = struct.unpack_from("<I", data, shoff + i * shentsize)
        at = strtab_off + name_off
        if data[at:at + len(old) + 1] == old + b"\0":
            data[at:at + len(new)] = new
            open(dst, "wb").write(bytes(data))
            return
    raise AssertionError(old)


def test_an_object_without_btf_ext(running_db, objects, tmp_path):
    noext = tmp_path / "noext.bpf.o"
    _rename_section(objects["core_task"], str(noext), b".BTF.ext", b".BTF.xxx")
    rc, out, err = run("btf", running_db, "--for", noext, "-o", tmp_path / "x.btf")
    assert_one_line_error(rc, out, err, 1, "noext.bpf.o", "no .BTF.ext")
    nobtf = tmp_path / "nobtf.bpf.o"
    _rename_section(objects["core_task"], str(nobtf), b".BTF", b".XTF")
    rc, out, err = run("btf", running_db, "--for", nobtf, "-o", tmp_path / "x.btf")
    assert_one_line_error(rc, out, err, 1, "nobtf.bpf.o", "no .BTF section")
    assert nothing_left(tmp_path)


def _corrupt_copies(obj: str, d) -> dict:
    data = open(obj, "rb").read()
    out = {"truncated": data[:600], "garbage": os.urandom(4096),
           "empty": b"", "not-bpf": open(sys.executable, "rb").read(1 << 16)}
    with E.ElfFile(obj) as elf:
        sec = elf.section(".BTF.ext")
        btf = elf.section(".BTF")
    hdr_len, = struct.unpack_from("<I", data, sec.offset + 4)
    core_off, = struct.unpack_from("<I", data, sec.offset + 24)
    bad = bytearray(data)                 # a CO-RE block claiming a million records
    struct.pack_into("<I", bad, sec.offset + hdr_len + core_off + 4 + 4, 1_000_000)
    out["huge-block"] = bytes(bad)
    bad = bytearray(data)                 # .BTF's type section said to run past the file
    struct.pack_into("<I", bad, btf.offset + 12, 1 << 30)
    out["btf-truncated"] = bytes(bad)
    bad = bytearray(data)                 # a relocation of an unknown kind
    struct.pack_into("<I", bad, sec.offset + hdr_len + core_off + 4 + 8 + 12, 99)
    out["bad-kind"] = bytes(bad)
    paths = {}
    for name, blob in out.items():
        p = d / f"{name}.bpf.o"
        p.write_bytes(blob)
        paths[name] = p
    return paths


def test_corrupt_objects(running_db, objects, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, path in _corrupt_copies(objects["core_task"], bad).items():
        rc, out, err = run("btf", running_db, "--for", path, "-o", tmp_path / "x.btf")
        assert_one_line_error(rc, out, err, 1, path.name)
        print(f"{name}: {err.strip()}")
    assert nothing_left(tmp_path)


def test_a_bad_db_among_many_writes_nothing(hive, objects, tmp_path):
    h = tmp_path / "h"
    shutil.copytree(hive, h)
    victim = next(p for p in h.rglob("*.db"))
    victim.write_bytes(b"SQLite format 3\0" + b"\0" * 4000)
    outdir = tmp_path / "out"
    rc, out, err = run("btf", "--hive", h, "--all", "-o", outdir, "--archive",
                       tmp_path / "a.tar.xz")
    assert rc != 0 and "Traceback" not in err and err.startswith("dbhive: error: "), err
    assert not outdir.exists() and not (tmp_path / "a.tar.xz").exists()


def test_usage_errors(running_db, tmp_path):
    rc, out, err = run("btf", running_db)
    assert_one_line_error(rc, out, err, 2, "-o")
    rc, out, err = run("btf", "-o", tmp_path / "x.btf")
    assert_one_line_error(rc, out, err, 2, "name a DB")
    rc, out, err = run("btf", running_db, "-o", tmp_path)
    assert_one_line_error(rc, out, err, 1, "is a directory")
    rc, out, err = run("btf", running_db, "-o", tmp_path / "x.btf", "--profile", "kernel-4.1")
    assert_one_line_error(rc, out, err, 1, "4.18")


# ---- the lbc server ----------------------------------------------------------------------------

@pytest.mark.slow
def test_lbc_serves_emitted_btf_for_a_dwarf_db(debian_vmlinux, tmp_path):
    from resolver.server import Kernels, lbc_one
    from tests.support.btfout import dwarf_hive, hive_files, vmlinux_without_btf
    db, btf = hive_files(dwarf_hive(vmlinux_without_btf(debian_vmlinux)))
    with open(btf, "rb") as fh:
        kept = fh.read()
    h = tmp_path / "hive"
    dest = h / os.path.relpath(db, os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(db)))))
    dest.parent.mkdir(parents=True)
    shutil.copy(db, dest)                     # the DB alone: no BTF file in this hive
    req = {"cmd": "btf", "ver": DEBIAN_RELEASE, "arch": "x86_64"}
    got = lbc_one(Kernels(hive=str(h)), req)
    assert got["log"] == "ok."
    assert base64.b64decode(got["btf"]) == kept          # what --with-btf wrote, byte for byte
    (h / "x86_64" / "btf").mkdir()
    (h / "x86_64" / "btf" / f"{DEBIAN_RELEASE}.btf").write_bytes(b"\x9f\xeb" + b"\0" * 30)
    got = lbc_one(Kernels(hive=str(h)), req)             # a file in the hive wins
    assert base64.b64decode(got["btf"]) == b"\x9f\xeb" + b"\0" * 30
