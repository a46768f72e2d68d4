"""Real older kernels, booted: Debian's bullseye 5.10 and bookworm 6.1 cloud kernels under
QEMU (TCG here), each DB built by `dbhive build <-dbg .deb> --source dwarf`, the tracer run
inside the booted kernel with its BTF ignored.

One boot per kernel: every in-guest check of this file is a step of that boot (see
tests/support/vm.py's boot_job).  5.10 is booted from local files (vmlinuz + unpacked modules and
headers), 6.1 from its package name, so both user forms boot for real.

Oracles: the guest kernel's own BTF (/sys/kernel/btf/vmlinux, read in the guest), the .BTF
section of the -dbg package (objcopy), what user space knows (tracer verify's checks), the
kernel's own report of what is attached (bpftool), the host resolver on the same DB, and
libbpf (the guest's libbpf1) relocating the CO-RE programs of data/core-src against the
kernel's BTF and against ours.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from tests.support import need_tool
from tests.support import vm as S
from tests.support.btfout import (PROGRAMS, TRUTH, comparable, core_fixtures, our_full_btf,
                                  relocations)
from tracer.vm import VMError, image, kernel, qemu, verify

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="the VM tests build a Debian root (mmdebstrap): root")

TRACER = os.path.join(os.path.dirname(sys.executable), "tracer")
KERNELS = [S.R510, S.R61]


# ---- fixtures: the real kernels, the hive, one boot per kernel ---------------------------

@pytest.fixture(scope="session")
def vm_hive():
    return S.hive()


@pytest.fixture(scope="session")
def go_probe():
    from tests.support.go_builds import binary
    return binary("1.24", "tracerprobe", "dwarf")


@pytest.fixture(scope="session")
def unpacked_510(tmp_path_factory):
    return S.unpacked_510(str(tmp_path_factory.mktemp("unpacked-510")))


@pytest.fixture(scope="session")
def kernels(unpacked_510):
    need_tool("qemu-system-x86_64")
    vmlinuz, modules = unpacked_510
    return {S.R510: kernel.from_files(vmlinuz, modules, cache=S.VM_CACHE),
            S.R61: kernel.from_package(S.IMAGE_PKG[S.R61], cache=S.VM_CACHE)}


@pytest.fixture(scope="session")
def core_fx(running_db, tmp_path_factory):
    """The CO-RE programs and libbpf loader of test_btf_core (compiled against a vmlinux.h of
    our BTF of this 6.18 kernel: neither guest's layout), built on the host."""
    need_tool("clang")
    need_tool("clang-16")
    return core_fixtures(our_full_btf(running_db,
                                      str(tmp_path_factory.mktemp("core") / "ours.btf")))


@pytest.fixture(scope="session")
def our_btfs(vm_hive, tmp_path_factory):
    """release -> our BTF of it (`dbhive btf` of its DWARF-built DB)."""
    dest = str(tmp_path_factory.mktemp("our-btf"))
    return {r: S.our_btf(vm_hive, r, dest) for r in KERNELS}


_boots: dict = {}


@pytest.fixture(scope="session")
def booted(kernels, vm_hive, go_probe, core_fx, our_btfs, tmp_path_factory):
    """release -> (run, main plan, crossed plan); each kernel booted once, on first use."""
    def get(release):
        if release not in _boots:
            k = kernels[release]
            ghive = S.guest_hive(vm_hive, release,
                                 str(tmp_path_factory.mktemp(f"ghive-{release}")))
            btfs = {"ours": our_btfs[release], "other": our_btfs[S.OTHER[release]]}
            job, main, crossed = S.boot_job(k, vm_hive, ghive, go_probe, core_fx, btfs)
            _boots[release] = (S.boot(k, job), main, crossed)
        return _boots[release]
    return get


def step_json(run, name):
    s = run.step(name)
    assert s.stdout.strip(), f"step {name} printed nothing (exit {s.rc}): {s.stderr[-2000:]}"
    return json.loads(s.stdout)


# ---- 1, 2: the kernel's own DB passes every field, and equals the guest's BTF -------------

@pytest.mark.parametrize("release", KERNELS)
def test_verify_passes_every_field_in_the_booted_kernel(booted, vm_hive, release):
    run, main, _ = booted(release)
    rep = verify.report(main, run)
    assert rep.kernel["release"] == release
    v = rep.verify
    assert v is not None, rep.errors
    failed = [c for c in v["checks"] if not c["ok"]]
    assert not failed, failed
    assert v["ok"] and not v["skipped"], v["skipped"]
    fields = {c["field"] for c in v["checks"]}
    # kernel fields and the Go test program, all read through the DB's offsets
    for want in ("task_struct.thread.fsbase", "dentry.d_name.name", "mnt_namespace.ns.inum",
                 "inet: skc_daddr", "inet6 v6only=1: skc_ipv6only (bitfield)",
                 "inet accepted: tcp_sock.copied_seq (rcv_nxt - 2000 unread)",
                 "go write: runtime.g.goid", "go read: n at RET"):
        assert any(f.startswith(want) for f in fields), want
    # the DB the tracer used is the kernel's own, found by build-id (not the decoy filed first)
    own = f"db:/job/hive/x86_64/db/debian/info-{release}.db"
    assert v["source"] == own
    assert v["kernel"]["build_id"] == S.db_meta(S.db_path(vm_hive, release))["build_id"]
    # the guest's own BTF gives identical members_offset values
    assert rep.btf["available"] and rep.btf["identical"], rep.btf
    assert rep.btf["fields"] >= 30
    assert rep.ok and not rep.errors
    text = rep.text()
    assert "OK: " in text and "FAIL" not in text.replace("FAILED", "")
    assert "identical offsets" in text


@pytest.mark.parametrize("release", KERNELS)
def test_db_layouts_equal_the_guest_btf(booted, release):
    """Every alternative path of the tracer's table, resolved in the guest from the DB and
    from the kernel's BTF independently (offset, size, bit position)."""
    run, _, _ = booted(release)
    out = step_json(run, "layout")
    assert out["same"], [r for r in out["rows"] if not r["same"]]
    present = [r for r in out["rows"] if "absent" not in r["db"]]
    assert len(present) >= 30
    # each kernel has exactly one of the task state spellings
    by = {r["path"]: r for r in out["rows"]}
    state = ("absent" in by["task_struct.state"]["db"], "absent" in by["task_struct.__state"]["db"])
    assert state == ((True, False) if release == S.R61 else (False, True))


@pytest.mark.parametrize("release", KERNELS)
def test_guest_btf_is_the_debuginfo_packages_btf(booted, release):
    run, _, _ = booted(release)
    blob = run.files["files/btf"]
    with open(S.dbg_btf(release), "rb") as fh:
        assert blob == fh.read()
    ident = step_json(run, "identity")
    assert ident["btf"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert ident["config"]["CONFIG_DEBUG_INFO_BTF"] == "y"


# ---- 3: crossed DBs fail, cleanly ----------------------------------------------------------

@pytest.mark.parametrize("release", KERNELS)
def test_other_kernels_db_fails_verify_cleanly(booted, release):
    run, _, crossed = booted(release)
    step = run.step("crossed-verify")
    assert step.rc == 1, step.stderr[-2000:]
    assert "Traceback" not in step.stderr
    rep = verify.report(crossed, run)
    v = rep.verify
    assert v["ok"] is False and v["source"].endswith(f"info-{S.OTHER[release]}.db")
    failed = [c["field"] for c in v["checks"] if not c["ok"]]
    assert len(failed) >= 10
    assert any(f.startswith("inet") for f in failed)
    # the traced Go program lived through it: its rows were reached, and it left cleanly
    assert any(c["field"] == "go: proc_info_map after detach" and c["ok"] for c in v["checks"])
    # and the other kernel's offsets are not this kernel's BTF's
    assert rep.btf["identical"] is False and rep.btf["differences"]
    assert not rep.ok and "FAILED" in rep.text()


def test_layout_check_fails_on_another_kernels_db(vm_hive):
    """The in-guest DB-vs-BTF comparison can fail: run here, on this 6.18 kernel's BTF, with
    the 6.1 DB."""
    env = dict(os.environ, PYTHONPATH=S.ROOT)
    p = subprocess.run([sys.executable, "-m", "tracer.vm.guest.layout_check", "--db",
                        S.db_path(vm_hive, S.R61)], capture_output=True, text=True, env=env)
    assert p.returncode == 1, p.stderr
    out = json.loads(p.stdout)
    assert out["same"] is False
    assert sum(1 for r in out["rows"] if not r["same"]) >= 5


def test_compare_offsets_sees_one_changed_field(booted):
    run, main, _ = booted(S.R61)
    db = step_json(run, main.step("offsets-db"))
    btf = step_json(run, main.step("offsets-btf"))
    assert verify.compare_offsets(db, btf)["identical"]
    f = next(x for x in btf["fields"] if "value" in x)
    f["value"] += 8
    cmp = verify.compare_offsets(db, btf)
    assert not cmp["identical"] and [d["field"] for d in cmp["differences"]] == [f["field"]]


# ---- 4: the resolver picks the DB by build-id -----------------------------------------------

@pytest.mark.parametrize("release", KERNELS)
def test_resolver_picks_the_db_by_build_id(booted, vm_hive, release):
    run, _, _ = booted(release)
    out = step_json(run, "layout")
    own = S.db_meta(S.db_path(vm_hive, release))
    assert out["identity"]["release"] == release
    assert out["identity"]["build_id"] == own["build_id"]          # /sys/kernel/notes
    # the decoy (same release, other build) sorts first and must lose
    assert out["db"]["path"] == f"/job/hive/x86_64/db/debian/info-{release}.db"
    assert out["db"]["build_id"] == own["build_id"] and not out["db"]["warnings"]
    listed = json.loads(run.files["files/list.json"])
    assert len(listed) == 3


@pytest.mark.parametrize("release", KERNELS)
def test_project_commands_answer_like_on_the_host(booted, vm_hive, release):
    """`resolver` in the guest (chosen by build-id) against the host resolver on the same DB."""
    from resolver import Resolver
    run, _, _ = booted(release)
    out = step_json(run, "project")
    assert out["kernel"]["db"] == f"/job/hive/x86_64/db/debian/info-{release}.db"
    with Resolver.open(db=S.db_path(vm_hive, release), overlay=None) as r:
        for path, got in out["offsets"].items():
            want = r.offset(path).as_dict()
            assert (got["offset"], got["size"]) == (want["offset"], want["size"]), path


# ---- 5: our BTF, emitted from the DWARF DB, drives libbpf CO-RE like the kernel's own ----

def core_result(run, variant, name):
    raw = run.files.get(f"files/core-{variant}-{name}.json", b"")
    assert raw.strip(), (f"{name} with the {variant} BTF printed nothing: "
                         f"{run.step('core-' + variant).stderr[-2000:]}")
    return json.loads(raw)


@pytest.mark.parametrize("release", KERNELS)
def test_core_programs_run_the_same_with_our_btf_in_the_booted_kernel(
        booted, core_fx, our_btfs, release, tmp_path):
    """In the guest, each CO-RE program loaded with btf_custom_path = our BTF of that kernel
    gets from libbpf the relocations, instructions and (attached, triggered) values it gets
    with the kernel's own /sys/kernel/btf/vmlinux -- and the values are what user space
    knows (pid, tgid, ppid, uid, mount namespace, TLS base, TCP ports)."""
    run, _, _ = booted(release)
    own_btf = tmp_path / "guest.btf"                 # the guest's /sys/kernel/btf/vmlinux
    own_btf.write_bytes(run.files["files/btf"])
    for name in PROGRAMS:
        own = comparable(name, core_result(run, "own", name), str(own_btf), core_fx[name])
        ours = comparable(name, core_result(run, "ours", name), our_btfs[release],
                          core_fx[name])
        assert own["hits"] == ours["hits"] == 1, name
        assert ours == own, name
        assert len(own["relocations"]) >= 15, name


@pytest.mark.parametrize("release", KERNELS)
def test_core_with_the_other_kernels_btf_differs_in_the_booted_kernel(
        booted, core_fx, our_btfs, release):
    """The check can fail: our BTF of the other kernel gives every program other
    relocations, and core_task, run with them, reads values user space contradicts."""
    run, _, _ = booted(release)
    for name in PROGRAMS:
        own, other = core_result(run, "own", name), core_result(run, "other", name)
        assert own["loaded"], own.get("log", "")[-2000:]
        assert not other["loaded"] or relocations(other) != relocations(own), name
    t = core_result(run, "other", "core_task")
    assert t["loaded"] and t["hits"] == 1, t
    wrong = [key for i, key in TRUTH["core_task"].items() if t["values"][i] != t["truth"][key]]
    assert {"pid", "tgid"} <= set(wrong), (wrong, t["values"], t["truth"])
    with pytest.raises(AssertionError):
        comparable("core_task", t, our_btfs[S.OTHER[release]], core_fx["core_task"])


# ---- 6: the tracer keeps its rules on kernels that have kprobes ----------------------------

@pytest.mark.parametrize("release", KERNELS)
def test_tracer_keeps_its_rules_in_the_guest(booted, release):
    """Raw program length and helper set (tracer verify's bpf: rows) on both kernels; what
    `tracer start` attaches, as the kernel reports it, on 5.10 (one boot's worth of CI)."""
    run, main, _ = booted(release)
    ident = step_json(run, main.step("identity"))
    assert ident["config"]["CONFIG_KPROBES"] == "y"        # kprobes were there to be used
    v = step_json(run, main.step("verify"))
    rules = [c for c in v["checks"] if c["field"].startswith("bpf:")]
    assert len(rules) >= 10 and all(c["ok"] for c in rules), rules   # raw length, helpers
    if release != S.R510:
        assert "rules" not in run.steps
        return
    out = step_json(run, "rules")
    kinds = {e["fd_type"] for e in out["attached"]}
    assert kinds == {"tracepoint", "uprobe"}, out["attached"]          # as the kernel says
    assert {p["type"] for p in out["programs"]} <= {"tracepoint", "kprobe"}   # uprobe progs
    assert out["tracer_rc"] == 0 and out["after"] == [] and out["go_rc"] == 0, out


# ---- the harness itself ----------------------------------------------------------------------

@pytest.mark.parametrize("release", KERNELS)
def test_bcc_runs_a_tracepoint_program(booted, release):
    run, _, _ = booted(release)
    out = step_json(run, "bcc")
    assert out["kernel"] == release
    assert out["hits"] == out["expected"] == 100


def test_steps_report_exit_status_output_and_timeouts(booted):
    run, _, _ = booted(S.R510)
    s = run.step("fails")
    assert (s.rc, s.stdout, s.stderr) == (3, "to-stdout\n", "to-stderr\n")
    h = run.step("hangs")
    assert h.rc == 124 and h.seconds < 30
    assert run.guest["release"] == S.R510 and run.accel in ("tcg", "kvm")
    assert 0 < run.timings["to_userspace"] < run.timings["total"]


def test_boot_that_overruns_is_stopped(kernels, tmp_path):
    job = qemu.Job()
    job.add_step("never", "sleep 600")
    t = time.monotonic()
    with pytest.raises(VMError, match="did not finish within 5 s"):
        qemu.run(kernels[S.R61], image.base_image(S.VM_CACHE), job, cache=S.VM_CACHE,
                 timeout=5, accel="tcg", keep=str(tmp_path / "run"))
    assert time.monotonic() - t < 30
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "run")], capture_output=True)
    assert left.returncode == 1, left.stdout


def test_images_are_cached_by_their_inputs(kernels, unpacked_510):
    base = image.base_image(S.VM_CACHE)
    stamp = os.stat(base.image).st_mtime_ns
    t = time.monotonic()
    again = image.base_image(S.VM_CACHE)
    k = kernel.from_package(S.IMAGE_PKG[S.R61], cache=S.VM_CACHE)
    k2 = kernel.from_files(*unpacked_510, cache=S.VM_CACHE)
    assert time.monotonic() - t < 20
    assert again.dir == base.dir and os.stat(base.image).st_mtime_ns == stamp
    assert k.dir == kernels[S.R61].dir and k2.dir == kernels[S.R510].dir
    assert base.info["python"].startswith("3.11")
    assert image.base_key(["pyelftools==0.1"]) != image.base_key()   # inputs change the key


def test_local_files_and_package_give_the_same_kernel(kernels):
    """5.10 boots from unpacked files; its package gives the same kernel image, modules for
    the initramfs and headers."""
    pk = kernel.from_package(S.IMAGE_PKG[S.R510], cache=S.VM_CACHE)
    lf = kernels[S.R510]
    assert pk.dir != lf.dir
    with open(pk.vmlinuz, "rb") as a, open(lf.vmlinuz, "rb") as b:
        assert a.read() == b.read()
    assert [os.path.basename(m) for m in pk.initrd_modules] == \
        [os.path.basename(m) for m in lf.initrd_modules] == \
        ["virtio.ko", "virtio_ring.ko", "virtio_pci.ko", "virtio_blk.ko"]
    both = {f"linux-headers-{S.R510}", "linux-headers-5.10.0-32-common"}   # what bcc reads
    assert both <= set(pk.info["headers"]) and both == set(lf.info["headers"])
    assert pk.dbg_package == f"linux-image-{S.R510}-dbg"


def test_local_debs_work_offline(kernels, tmp_path):
    """A local image .deb with its headers .debs next to it: no network, and the same kernel
    as the package name gives (same inputs, same key)."""
    local = tmp_path / "debs"
    local.mkdir()
    names = [S.IMAGE_PKG[S.R61], f"linux-headers-{S.R61}", "linux-headers-6.1.0-47-common",
             "linux-kbuild-6.1"]
    for name in names:
        shutil.copy(S.apt().cached(name), local)
    image_deb = str(next(local.glob(f"{S.IMAGE_PKG[S.R61]}_*.deb")))
    k = kernel.from_package(image_deb, cache=str(tmp_path / "cache"), offline=True)
    ref = kernels[S.R61]
    assert os.path.basename(k.dir) == os.path.basename(ref.dir)
    with open(k.vmlinuz, "rb") as a, open(ref.vmlinuz, "rb") as b:
        assert a.read() == b.read()
    assert [os.path.basename(m) for m in k.initrd_modules] == \
        [os.path.basename(m) for m in ref.initrd_modules]
    next(local.glob("linux-kbuild-6.1_*.deb")).unlink()
    with pytest.raises(VMError, match="linux-kbuild-6.1 is not in the cache and --offline"):
        kernel.from_package(image_deb, cache=str(tmp_path / "cache2"), offline=True)


# ---- bad input: one line, an exit code, nothing booted ---------------------------------------

def tracer(*args):
    return subprocess.run([TRACER, *args], capture_output=True, text=True,
                          env=dict(os.environ, DBHIVE_VM_CACHE=S.VM_CACHE))


@pytest.mark.parametrize("args,code,message", [
    (["vm-verify", "--kernel-package", S.IMAGE_PKG[S.R61]], 2, "give --hive DIR or --db FILE"),
    (["vm-verify", "--kernel-package", "linux-image-0.0.0-nonexistent", "--hive", "/tmp"], 4,
     "apt-get download"),
    (["vm-verify", "--kernel", "/nonexistent/vmlinuz", "--modules", "/nonexistent", "--db",
      "/nonexistent.db"], 4, "no such kernel image"),
    (["vm-verify", "--kernel-package", S.IMAGE_PKG[S.R61], "--db", "/nonexistent.db"], 3,
     "no such DB file"),
    (["vm-verify", "--kernel-package", f"linux-image-{S.R61}-dbg", "--db", "/x.db"], 4,
     "is the debuginfo package"),
    (["vm-run", "--kernel-package", S.IMAGE_PKG[S.R61], "--keep", "/", "--", "true"], 4,
     "is not empty"),
])
def test_user_errors(args, code, message, kernels):
    p = tracer(*args)
    assert p.returncode == code, p.stderr
    assert message in p.stderr and "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    if code == 2:                             # click's usage error: usage, hint, the error
        assert lines[-1] == f"Error: {message}", lines
    else:
        assert len(lines) == 1 and lines[0].startswith("tracer: error: "), lines


def test_hive_without_the_kernels_db(kernels, tmp_path):
    p = tracer("vm-verify", "--kernel-package", S.IMAGE_PKG[S.R61], "--hive", str(tmp_path))
    assert p.returncode == 3 and "has no DB for 6.1.0-47-cloud-amd64" in p.stderr
    assert "--build-missing" in p.stderr and "Traceback" not in p.stderr
    # --offline holds for --build-missing too: the -dbg package is not fetched (the 6.1 one is
    # the tests' shared input, never in the VM's package cache)
    p = tracer("vm-verify", "--kernel-package", S.IMAGE_PKG[S.R61], "--hive", str(tmp_path),
               "--build-missing", "--offline")
    assert p.returncode == 4, p.stderr
    assert p.stderr.strip() == (f"tracer: error: linux-image-{S.R61}-dbg is not in the cache "
                                f"and --offline was given")


def test_result_archive_may_not_escape(tmp_path):
    bad = tmp_path / "out.img"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../../etc/evil")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(VMError, match="result archive"):
        qemu._read_results(str(bad))
    blank = tmp_path / "blank.img"            # a guest that never wrote its results
    blank.write_bytes(bytes(1 << 20))
    assert qemu._read_results(str(blank)) == {}


def test_job_paths_are_checked():
    job = qemu.Job()
    for bad in ("../x", "/abs", "stage2", "bin/tracer", "steps/x"):
        with pytest.raises(ValueError):
            job.add_file(bad, b"")
    job.add_step("a", "true")
    with pytest.raises(ValueError):
        job.add_step("a", "true")


def test_kvm_is_not_retried_once_seen_hanging(tmp_path):
    cache = str(tmp_path)
    was = qemu.kvm_usable(cache)
    qemu._mark_kvm_broken(cache)
    assert qemu.kvm_usable(cache) is False
    assert qemu._choose_accel("auto", cache) == "tcg"
    assert qemu._choose_accel("kvm", cache) == "kvm"       # asked for: no second-guessing
    assert was == (os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK))
