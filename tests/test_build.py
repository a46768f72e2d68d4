"""`dbhive build/list/show` end to end on real inputs, checked against pahole and the
running kernel; bad input leaves nothing behind."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from dbhive import store
from tests.support.pahole_compare import compare_with_pahole
from tests.support.pahole_oracle import pahole_layouts

from scripts.realdata import DEBIAN_RELEASE

DBHIVE = os.path.join(os.path.dirname(sys.executable), "dbhive")


def dbhive(*args, check=True):
    proc = subprocess.run([DBHIVE, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dbhive {' '.join(args)} failed: {proc.stderr}")
    return proc


def files_under(path):
    return sorted(os.path.relpath(os.path.join(d, f), path)
                  for d, _, fs in os.walk(path) for f in fs)


@pytest.fixture(scope="module")
def running_hive(tmp_path_factory, running_btf):
    hive = str(tmp_path_factory.mktemp("hive"))
    dbhive("build", running_btf, "--hive", hive)
    return hive


def test_running_kernel_db_is_keyed_by_identity(running_hive):
    uname = os.uname()
    rows = json.loads(dbhive("list", "--hive", running_hive, "--json").stdout)
    assert len(rows) == 1
    meta = rows[0]
    assert meta["release"] == uname.release and meta["arch"] == uname.machine
    assert meta["db"] == os.path.join(running_hive, uname.machine, "db", "unknown",
                                      f"info-{uname.release}.db")
    assert meta["type_source"] == "btf" and meta["source_kind"] == "raw-btf"
    assert len(meta["build_id"]) == 40
    with open("/sys/kernel/btf/vmlinux", "rb") as fh:
        assert meta["source_sha256"] == hashlib.sha256(fh.read()).hexdigest()
    text = dbhive("list", "--hive", running_hive).stdout
    assert uname.release in text and meta["build_id"][:16] in text


def test_running_kernel_db_equals_pahole_for_every_struct(running_hive, running_btf):
    db = json.loads(dbhive("list", "--hive", running_hive, "--json").stdout)[0]["db"]
    result = compare_with_pahole(store.load_graph(db), pahole_layouts(running_btf, "btf"))
    assert result["problems"] == []
    assert result["checked"] > 9000


def test_show_matches_pahole(running_hive, running_btf):
    db = json.loads(dbhive("list", "--hive", running_hive, "--json").stdout)[0]["db"]
    shown = json.loads(dbhive("show", "--db", db, "--json", "task_struct", "sock").stdout)
    oracle = pahole_layouts(running_btf, "btf")
    for layout in shown:
        want = oracle[f"struct {layout['name']}"][0]
        assert layout["size"] == want.size

        def walk(members):
            for m in members:
                if "members" in m:
                    yield from walk(m["members"])
                elif m["name"]:
                    yield m
        for m in walk(layout["members"]):
            w = want.member(m["name"])
            if m["bit_size"]:
                assert (m["bit_offset"], m["bit_size"]) == (w.bit_offset_total, w.bit_size)
            else:
                assert (m["offset"], m["size"]) == (w.offset, w.size), m["name"]
    text = dbhive("show", "--db", db, "task_struct").stdout
    files = oracle["struct task_struct"][0].member("files")
    line = next(ln for ln in text.splitlines() if " *files;" in ln)
    assert f"/* {files.offset:5d} {files.size:5d} */" in line


def test_debian_deb_btf_source_equals_pahole(tmp_path, debian_dbg_deb, debian_vmlinux,
                                             debian_vmlinux_btf):
    """The real .deb, streamed: identity from the kernel itself, types from its .BTF."""
    hive = str(tmp_path / "hive")
    out = json.loads(dbhive("build", debian_dbg_deb, "--hive", hive, "--distro", "debian",
                            "--source", "btf", "--json").stdout)
    meta = out["meta"]
    assert out["db"] == os.path.join(hive, "x86_64", "db", "debian", f"info-{DEBIAN_RELEASE}.db")
    assert meta["release"] == DEBIAN_RELEASE and meta["flavour"] == "cloud-amd64"
    readelf = subprocess.run(["readelf", "-n", debian_vmlinux], capture_output=True,
                             text=True, check=True).stdout
    assert f"Build ID: {meta['build_id']}" in readelf
    assert meta["source_member"] == f"usr/lib/debug/boot/vmlinux-{DEBIAN_RELEASE}"
    assert meta["package_name"] == f"linux-image-{DEBIAN_RELEASE}-dbg"
    result = compare_with_pahole(store.load_graph(out["db"]), pahole_layouts(debian_vmlinux, "btf"))
    assert result["problems"] == [] and result["checked"] > 7000
    # the DB and the kernel's BTF (for the lbc `btf` command) are all that is left
    btf_copy = f"x86_64/btf/{DEBIAN_RELEASE}.btf"
    assert files_under(hive) == sorted([os.path.relpath(out["db"], hive), btf_copy])
    with open(os.path.join(hive, btf_copy), "rb") as a, open(debian_vmlinux_btf, "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("header", [False, True], ids=["db", "db+header"])
def test_package_sha256_is_the_packages(tmp_path, debian_dbg_deb, header):
    """The input's sha256 is hashed meanwhile and waited for late (while the DB's rows are
    inserted; for --with-header before the header is made, whose banner says it): in the
    DB's meta, the JSON and the banner it is hashlib's sha256 of the real .deb."""
    out = str(tmp_path / "x.db")
    res = json.loads(dbhive("build", debian_dbg_deb, "--out", out, "--source", "btf",
                            "--no-progress", "--json", *(["--with-header"] if header else [])
                            ).stdout)
    with open(debian_dbg_deb, "rb") as fh:
        want = hashlib.file_digest(fh, "sha256").hexdigest()
    assert store.read_meta(out)["source_sha256"] == want
    assert res["meta"]["source_sha256"] == want
    if header:
        with open(str(tmp_path / "x.h")) as fh:
            assert f"source-sha256={want}" in fh.read(4096)


def _damaged(tmp_path, src, name, keep_bytes=None, flip_at=None):
    dst = tmp_path / name
    with open(src, "rb") as fh:
        data = bytearray(fh.read(keep_bytes) if keep_bytes else fh.read())
    if flip_at is not None:
        for i in range(flip_at, flip_at + 64):
            data[i] ^= 0xFF
    dst.write_bytes(bytes(data))
    return str(dst)


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "not-a-kernel-elf",
                                  "truncated-btf", "truncated-deb", "text-file"])
def test_bad_input_one_line_error_nothing_written(tmp_path, running_btf, debian_dbg_deb, case):
    hive = tmp_path / "hive"
    if case == "missing":
        path = str(tmp_path / "nope.deb")
    elif case == "directory":
        path = str(tmp_path)
    elif case == "empty":
        path = str(tmp_path / "empty.btf")
        open(path, "wb").close()
    elif case == "not-a-kernel-elf":
        path = shutil.which("ls")
    elif case == "truncated-btf":
        path = _damaged(tmp_path, running_btf, "cut.btf", keep_bytes=1 << 20)
    elif case == "truncated-deb":
        path = _damaged(tmp_path, debian_dbg_deb, "cut.deb", keep_bytes=8 << 20)
    else:
        path = str(tmp_path / "notes.txt")
        with open(path, "w") as fh:
            fh.write("hello\n")
    proc = dbhive("build", path, "--hive", str(hive), check=False)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dbhive: error: "), err
    assert "Traceback" not in err
    assert not hive.exists() or files_under(str(hive)) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("dbhive-")) == []


def _wait_for(cond, proc, timeout=60.0):
    """Poll until cond() while `proc` runs; fails if it ended first."""
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, "the build ended before the point to interrupt it at"
        assert time.monotonic() - t0 < timeout, "the point to interrupt at never came"
        time.sleep(0.02)


def _written(work) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(work) for f in fs)


@pytest.mark.parametrize("delay", [0.0, 0.5, 1.5])
def test_interrupted_build_leaves_nothing(tmp_path, debian_dbg_deb, delay):
    """SIGTERM at several points of the streaming extraction (inside libarchive's read
    callback too): one line saying so, nothing left in the hive or the temp dir."""
    hive = tmp_path / "hive"
    work = tmp_path / "work"
    work.mkdir()
    env = dict(os.environ, TMPDIR=str(work))
    proc = subprocess.Popen([DBHIVE, "build", debian_dbg_deb, "--hive", str(hive),
                             "--source", "btf"], env=env, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _written(work) > 0, proc)        # the kernel member is being written
    time.sleep(delay)
    assert proc.poll() is None, "the build ended before the signal"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "dbhive: error: interrupted; nothing was written"
    assert not hive.exists() or files_under(str(hive)) == []
    assert list(work.iterdir()) == []


def test_rpm_normal_and_debug_flavours_never_collide(tmp_path, debian_vmlinux):
    """Real RPMs made by rpmbuild around the real vmlinux: a kernel-debuginfo and a
    kernel-debug-debuginfo of the same release land as two DBs, the debug one marked."""
    from tests.support.rpms import make_rpms
    paths = list(make_rpms("big").values())
    normal = next(p for p in paths if os.path.basename(p).startswith("kernel-debuginfo-"))
    debug = next(p for p in paths if os.path.basename(p).startswith("kernel-debug-debuginfo-"))
    hive = str(tmp_path / "hive")
    metas = {}
    for label, rpm in (("normal", normal), ("debug", debug)):
        out = json.loads(dbhive("build", rpm, "--hive", hive, "--distro", "fedora",
                                "--source", "btf", "--json").stdout)
        metas[label] = out
        assert out["meta"]["release"] == DEBIAN_RELEASE          # from the banner, not the name
        assert out["meta"]["source_kind"] == "rpm"
    assert metas["normal"]["meta"]["flavour"] == "cloud-amd64"
    assert metas["debug"]["meta"]["flavour"] == "debug"
    assert os.path.basename(metas["normal"]["db"]) == f"info-{DEBIAN_RELEASE}.db"
    assert os.path.basename(metas["debug"]["db"]) == f"info-{DEBIAN_RELEASE}+debug.db"
    assert files_under(hive) == sorted([
        f"x86_64/db/fedora/info-{DEBIAN_RELEASE}.db", f"x86_64/db/fedora/info-{DEBIAN_RELEASE}+debug.db",
        f"x86_64/btf/{DEBIAN_RELEASE}.btf", f"x86_64/btf/{DEBIAN_RELEASE}+debug.btf"])


def test_btfhub_archive_identity_from_its_name(tmp_path, running_btf):
    """A btfhub-style <release>.btf.tar.xz (made here with tar from a real BTF blob)."""
    release = "5.4.0-91-generic"
    src = tmp_path / "src"
    archdir = tmp_path / "btfhub" / "ubuntu" / "20.04" / "x86_64"
    src.mkdir()
    archdir.mkdir(parents=True)
    shutil.copy(running_btf, src / f"{release}.btf")
    archive = archdir / f"{release}.btf.tar.xz"
    subprocess.run(["tar", "-C", str(src), "-cJf", str(archive), f"{release}.btf"], check=True)
    hive = str(tmp_path / "hive")
    out = json.loads(dbhive("build", str(archive), "--hive", hive, "--distro", "ubuntu",
                            "--json").stdout)
    meta = out["meta"]
    assert (meta["release"], meta["arch"], meta["flavour"], meta["build_id"]) == \
        (release, "x86_64", "generic", "")
    assert meta["source_kind"] == "btf-archive" and meta["type_source"] == "btf"
    assert out["db"].endswith(f"/x86_64/db/ubuntu/info-{release}.db")


def test_interrupted_dwarf_build_stops_its_workers(tmp_path, debian_vmlinux):
    """SIGTERM while the two DWARF workers run: one line, no DB, no worker left behind."""
    hive = tmp_path / "hive"
    proc = subprocess.Popen([DBHIVE, "build", debian_vmlinux, "--hive", str(hive)],
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: _children(proc.pid), proc)     # a DWARF worker runs
    time.sleep(0.3)
    children = _children(proc.pid)
    assert children and proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip() == "dbhive: error: interrupted; nothing was written"
    assert not hive.exists() or files_under(str(hive)) == []
    time.sleep(1)
    assert [c for c in children if os.path.exists(f"/proc/{c}")] == []


def _children(pid: int) -> list:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return fh.read().split()
    except OSError:
        return []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_while_the_db_is_written(tmp_path, running_btf, sig):
    """SIGTERM / Ctrl-C while the worker that writes the surftrace tables runs: one line,
    no DB, no temp file, no worker left behind."""
    proc = subprocess.Popen([DBHIVE, "build", running_btf, "--out", str(tmp_path / "x.db"),
                             "--no-progress"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    kids: list = []
    while not kids and proc.poll() is None and time.monotonic() < deadline:
        kids = _children(proc.pid)
        time.sleep(0.002)
    assert kids, "the build wrote its DB without a worker process"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "dbhive: error: interrupted; nothing was written"
    assert files_under(str(tmp_path)) == []
    assert [c for c in kids if os.path.exists(f"/proc/{c}")] == []
