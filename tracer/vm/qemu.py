"""One boot of a kernel under QEMU running a job, and its results back on the host.

The guest sees four virtio disks, found by serial number (not by probe order):

* `dbhive-root`   the bookworm userland (image.Base), copy-on-write (`snapshot=on`)
* `dbhive-kernel` the kernel's modules and headers (kernel.Kernel), read-only
* `dbhive-job`    made per run: stage 2, the project's code, the DBs and files the job
                  needs, and its steps (bash scripts, each with a time limit)
* `dbhive-out`    an empty raw disk the guest writes one tar archive to: per step its stdout,
                  stderr, exit status and guest-side times

The initramfs (built per run, in milliseconds) holds only a static busybox, this kernel's own
virtio modules and the stage-1 init.  The serial console carries the kernel log and progress
markers (`DBHIVE-VM ...`); the host reads it live for progress and timings, and keeps it for
errors.  Results come only from the output disk, so console noise can never corrupt them.

Acceleration: KVM when /dev/kvm is usable and has not been seen to hang on this host, else
TCG.  A KVM guest that shows no sign of life within `KVM_PROBE_S` is killed, KVM is marked
broken for this host (kernel release + QEMU version) in the cache, and the run is repeated
under TCG.
"""
from __future__ import annotations

import collections
import compileall
import importlib
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import libarchive

from . import VMError
from .cache import vm_cache
from .image import GUEST_PYTHON, SITE, Base, make_ext4
from .kernel import Kernel

GUEST_DIR = os.path.join(os.path.dirname(__file__), "guest")
PROJECT_PACKAGES = ("dbhive", "resolver", "tracer")
KVM_PROBE_S = 20
OUT_DISK_MB = 256
CONSOLE_LINES = 20000             # the console kept in memory (a chatty guest cannot fill RAM)
CONSOLE_LOG_MAX = 64 << 20        # and on disk (console.log in the run directory)
CONSOLE_LINE_MAX = 64 << 10       # a longer console line is read (and kept) in pieces
KERNEL_ARGS = ("console=ttyS0", "panic=-1", "mitigations=off", "rdinit=/init",
               "loglevel=4")


@dataclass
class StepResult:
    name: str
    rc: int
    stdout: str
    stderr: str
    seconds: float          # measured in the guest

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass
class Run:
    steps: dict
    files: dict             # every file of the output archive: name -> bytes
    console: str
    accel: str
    timings: dict           # host-measured seconds: to_initramfs, to_userspace, total
    guest: dict             # release and uptime seen by stage 2

    def step(self, name: str) -> StepResult:
        if name not in self.steps:
            raise VMError(f"the guest did not run step {name!r}")
        return self.steps[name]


@dataclass
class Job:
    """What one boot does: files placed on the job disk, and steps run in order."""
    files: dict = field(default_factory=dict)     # job-relative path -> (host path | bytes, mode)
    steps: list = field(default_factory=list)     # (name, bash script, time limit s)

    def add_file(self, rel: str, src, mode: Optional[int] = None) -> str:
        """Put a host file or directory (path) or bytes at /job/REL; returns the guest path.
        A file keeps its mode unless MODE is given (bytes: 0644)."""
        self._check(rel)
        self.files[rel] = (src, mode)
        return "/job/" + rel

    def add_step(self, name: str, script: str, timeout: int = 600) -> None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or any(
                n == name for n, _s, _t in self.steps):
            raise ValueError(f"bad or duplicate step name {name!r}")
        self.steps.append((name, script, int(timeout)))

    @staticmethod
    def _check(rel: str) -> None:
        parts = rel.split("/")
        if not rel or rel.startswith("/") or ".." in parts or parts[0] in (
                "stage2", "env", "bin", "project", "steps", "steps.list"):
            raise ValueError(f"job path {rel!r} is reserved or unsafe")


def run(kernel: Kernel, base: Base, job: Job, *, memory_mb: int = 2048, cpus: int = 2,
        timeout: float = 1200, accel: str = "auto", cache: Optional[str] = None,
        progress: Optional[Callable[[str], None]] = None, keep: Optional[str] = None) -> Run:
    """Boot KERNEL with BASE's userland, run JOB's steps, return their results.

    `timeout` bounds the whole boot; `keep` names a directory to keep the run's disks and
    console log in (for debugging), else they are removed."""
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        raise VMError("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    cache = vm_cache(cache)
    if keep and os.path.exists(keep) and os.listdir(keep):
        raise VMError(f"{keep} is not empty (--keep needs a new or empty directory)")
    work = keep or tempfile.mkdtemp(prefix="run.", dir=cache)
    os.makedirs(work, exist_ok=True)
    try:
        t = time.monotonic()
        _make_initramfs(kernel, base, os.path.join(work, "initrd.cpio"))
        _make_job_disk(job, os.path.join(work, "job"), os.path.join(work, "job.img"))
        prep = time.monotonic() - t
        chosen = _choose_accel(accel, cache)
        try:
            result = _boot(qemu, kernel, base, work, chosen, memory_mb, cpus, timeout,
                           progress, probe=(chosen == "kvm" and accel == "auto"))
        except _KvmHang:
            _mark_kvm_broken(cache)
            if progress:
                progress(f"KVM showed no sign of life in {KVM_PROBE_S} s: using TCG")
            result = _boot(qemu, kernel, base, work, "tcg", memory_mb, cpus, timeout,
                           progress, probe=False)
        result.timings["prepare"] = round(prep, 2)
        return result
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


class _KvmHang(Exception):
    pass


def _host_tag() -> str:
    try:
        ver = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True,
                             text=True).stdout.split("\n")[0].split()[3]
    except (OSError, IndexError):
        ver = "?"
    return f"{os.uname().release}-qemu{ver}"


def _kvm_marker(cache: str) -> str:
    return os.path.join(cache, f"kvm-hangs-{_host_tag()}")


def _mark_kvm_broken(cache: str) -> None:
    with open(_kvm_marker(cache), "w") as fh:
        fh.write("a guest under KVM showed no output; TCG is used on this host\n")


def kvm_usable(cache: Optional[str] = None) -> bool:
    return (os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)
            and not os.path.exists(_kvm_marker(vm_cache(cache))))


def _choose_accel(accel: str, cache: str) -> str:
    if accel not in ("auto", "kvm", "tcg"):
        raise VMError(f"unknown accelerator {accel!r} (auto, kvm or tcg)")
    if accel == "auto":
        return "kvm" if kvm_usable(cache) else "tcg"
    return accel


def _make_initramfs(kernel: Kernel, base: Base, out: str) -> None:
    """newc cpio: /init, a static busybox, this kernel's virtio modules and their order."""
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("bin", "modules", "dev", "proc", "sys", "newroot"):
            os.makedirs(os.path.join(tmp, d))
        shutil.copy2(base.busybox, os.path.join(tmp, "bin", "busybox"))
        shutil.copy2(os.path.join(GUEST_DIR, "init"), os.path.join(tmp, "init"))
        os.chmod(os.path.join(tmp, "init"), 0o755)
        names = []
        for mod in kernel.initrd_modules:
            shutil.copy2(mod, os.path.join(tmp, "modules"))
            names.append(os.path.basename(mod))
        with open(os.path.join(tmp, "modules", "load.list"), "w") as fh:
            fh.write("\n".join(names) + "\n")
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            with libarchive.file_writer(out, "cpio_newc") as archive:
                archive.add_files(*sorted(os.listdir(".")))
        finally:
            os.chdir(cwd)


def _project_files(dest: str) -> None:
    """The project's packages as they are installed on the host (editable or wheel)."""
    for name in PROJECT_PACKAGES:
        mod = importlib.import_module(name)
        src = os.path.dirname(mod.__file__)
        shutil.copytree(src, os.path.join(dest, name),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if "%d.%d" % sys.version_info[:2] == GUEST_PYTHON:     # same bytecode: save guest time
        compileall.compile_dir(dest, quiet=1, workers=0)


def _entry_points() -> dict:
    eps = importlib.metadata.entry_points()
    group = eps.select(group="console_scripts") if hasattr(eps, "select") \
        else eps.get("console_scripts", [])
    return {ep.name: ep.value for ep in group
            if ep.value.split(".")[0].split(":")[0] in PROJECT_PACKAGES}


def _make_job_disk(job: Job, tree: str, out: str) -> None:
    os.makedirs(os.path.join(tree, "steps"))
    os.makedirs(os.path.join(tree, "bin"))
    shutil.copy2(os.path.join(GUEST_DIR, "stage2"), os.path.join(tree, "stage2"))
    os.chmod(os.path.join(tree, "stage2"), 0o755)
    _project_files(os.path.join(tree, "project"))
    with open(os.path.join(tree, "env"), "w") as fh:
        fh.write(f"export PYTHONPATH=/job/project:{SITE}\n")
    for name, value in _entry_points().items():
        module, _, func = value.partition(":")
        path = os.path.join(tree, "bin", name)
        with open(path, "w") as fh:
            fh.write(f"#!/usr/bin/python3\nimport sys\nfrom {module} import {func}\n"
                     f"sys.exit({func}())\n")
        os.chmod(path, 0o755)
    with open(os.path.join(tree, "steps.list"), "w") as fh:
        for name, script, limit in job.steps:
            fh.write(f"{name} {limit}\n")
            with open(os.path.join(tree, "steps", name), "w") as sfh:
                sfh.write("set -o pipefail\ncd /tmp\n" + script + "\n")
    for rel, (src, mode) in job.files.items():
        path = os.path.join(tree, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if isinstance(src, (bytes, bytearray)):
            with open(path, "wb") as fh:
                fh.write(src)
        elif os.path.isdir(src):
            shutil.copytree(src, path, symlinks=True)
        else:
            shutil.copy(src, path)
        if mode is not None and not os.path.isdir(path):
            os.chmod(path, mode)
    make_ext4(tree, out, label="dbhive-job", spare_mb=64)


def _qemu_cmd(qemu: str, kernel: Kernel, base: Base, work: str, accel: str,
              memory_mb: int, cpus: int) -> list:
    out = os.path.join(work, "out.img")
    with open(out, "wb") as fh:
        fh.truncate(OUT_DISK_MB << 20)
    disks = [(base.image, "dbhive-root", "snapshot=on"),
             (kernel.disk, "dbhive-kernel", "readonly=on"),
             (os.path.join(work, "job.img"), "dbhive-job", "snapshot=on"),
             (out, "dbhive-out", "cache=writethrough")]
    cmd = [qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
           "-machine", "pc",
           "-m", str(memory_mb), "-smp", str(cpus), "-cpu", "qemu64",
           "-kernel", kernel.vmlinuz, "-initrd", os.path.join(work, "initrd.cpio"),
           "-append", " ".join(KERNEL_ARGS),
           "-serial", "stdio", "-monitor", "none"]
    cmd += ["-accel", "kvm"] if accel == "kvm" else ["-accel", "tcg,thread=multi"]
    for i, (path, serial, opts) in enumerate(disks):
        cmd += ["-drive", f"file={path},if=none,id=d{i},format=raw,file.locking=off,{opts}",
                "-device", f"virtio-blk-pci,drive=d{i},serial={serial}"]
    return cmd


def _boot(qemu: str, kernel: Kernel, base: Base, work: str, accel: str, memory_mb: int,
          cpus: int, timeout: float, progress, probe: bool) -> Run:
    cmd = _qemu_cmd(qemu, kernel, base, work, accel, memory_mb, cpus)
    env = dict(os.environ, TMPDIR=work)         # snapshot overlays live with the run
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    lines: collections.deque = collections.deque(maxlen=CONSOLE_LINES)   # bounded
    marks: dict = {}

    log = open(os.path.join(work, "console.log"), "w", buffering=1)   # live, for --keep
    logged = 0

    def reader() -> None:
        nonlocal logged
        for raw in iter(lambda: proc.stdout.readline(CONSOLE_LINE_MAX), b""):   # bounded
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            lines.append(line)
            if logged < CONSOLE_LOG_MAX:
                log.write(f"[{time.monotonic() - t0:8.2f}] {line}\n")
                logged += len(line) + 12
            if line.startswith("DBHIVE-VM"):
                words = line.split()
                tag = words[1] if len(words) > 1 else ""
                now = round(time.monotonic() - t0, 2)
                marks.setdefault(tag if tag not in ("step-start", "step-end")
                                 else f"{tag} {words[2] if len(words) > 2 else ''}", now)
                if progress and tag in ("stage1", "userspace", "step-start", "step-end"):
                    progress(f"[{now:6.1f}s] {' '.join(words[1:])}")

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    limit = KVM_PROBE_S if probe else timeout
    try:
        while True:
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            elapsed = time.monotonic() - t0
            if probe and "stage1" in marks:
                limit = timeout
            if elapsed > limit:
                _kill(proc)
                th.join(5)
                if probe and "stage1" not in marks:
                    raise _KvmHang()
                raise VMError(f"the guest ({kernel.release}, {accel}) did not finish within "
                              f"{int(limit)} s; last console lines:\n" + _tail(lines))
    except BaseException:
        _kill(proc)
        th.join(5)
        log.close()
        raise
    th.join(10)
    log.close()
    total = time.monotonic() - t0
    console = "\n".join(lines)
    files = _read_results(os.path.join(work, "out.img"))
    if files.get("status", b"").strip() != b"done":
        fails = [ln for ln in lines if "DBHIVE-VM-FAIL" in ln or "Kernel panic" in ln]
        raise VMError(f"the guest ({kernel.release}) stopped before finishing its job"
                      f" (qemu exit {proc.returncode}){': ' + fails[0] if fails else ''};"
                      f" last console lines:\n" + _tail(lines))
    steps = {}
    for name, _script, _limit in _job_steps(work):
        rc_line = files.get(f"steps/{name}.rc", b"").decode().split()
        if len(rc_line) != 3:
            raise VMError(f"step {name} left no exit status")
        steps[name] = StepResult(
            name, int(rc_line[0]),
            files.get(f"steps/{name}.out", b"").decode("utf-8", "replace"),
            files.get(f"steps/{name}.err", b"").decode("utf-8", "replace"),
            round(float(rc_line[2]) - float(rc_line[1]), 2))
    guest = dict(ln.split("=", 1) for ln in files.get("guest.txt", b"").decode().splitlines()
                 if "=" in ln)
    timings = {"to_initramfs": marks.get("stage1"), "to_userspace": marks.get("userspace"),
               "total": round(total, 2)}
    return Run(steps, files, console, accel, timings, guest)


def _job_steps(work: str) -> list:
    with open(os.path.join(work, "job", "steps.list")) as fh:
        return [(ln.split()[0], None, None) for ln in fh if ln.strip()]


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _tail(lines, n: int = 25) -> str:
    return "\n".join("  " + ln for ln in list(lines)[-n:])


def _read_results(path: str) -> dict:
    """Regular files of the tar archive on the output disk (bounded by the disk's size;
    names that could escape are refused)."""
    out = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for m in tar:
                name = m.name[2:] if m.name.startswith("./") else m.name
                if not m.isfile():
                    continue
                if name.startswith("/") or ".." in name.split("/"):
                    raise VMError(f"the guest's result archive names {m.name!r}")
                fh = tar.extractfile(m)
                out[name] = fh.read(m.size) if fh else b""
    except tarfile.ReadError:
        return {}
    return out
