"""`tracer vm-*` commands: boot a real kernel under QEMU and run the project inside it.

    tracer vm-image  --kernel-package NAME            fetch and build what a boot needs
    tracer vm-run    --kernel-package NAME -- CMD      run one command in the booted kernel
    tracer vm-verify --kernel-package NAME --hive DIR  the tracer's proof inside the kernel
"""
from __future__ import annotations

import json
import os
import shlex
import sys

import click

from dbhive.errors import DbhiveError

from . import VMError

CONTEXT = {"help_option_names": ["-h", "--help"]}


def _say(msg: str) -> None:
    click.echo(f"vm: {msg}", err=True)


def fail(message: str, code: int = 1):
    click.echo(f"tracer: error: {message}", err=True)
    sys.exit(code)


def kernel_options(fn):
    opts = [
        click.option("--kernel-package", "package", metavar="NAME|DEB",
                     help="Debian kernel image package: a name fetched with apt (bookworm or "
                          "bullseye) and cached, or a local .deb (headers .debs next to it "
                          "are used, else fetched)."),
        click.option("--kernel", "vmlinuz", metavar="VMLINUZ", help="A local kernel image."),
        click.option("--modules", metavar="DIR", help="Its /lib/modules/<release> directory."),
        click.option("--headers", metavar="DIR",
                     help="Its headers build tree (default: DIR/build of --modules)."),
        click.option("--offline", is_flag=True, help="Never fetch: use cached packages only."),
        click.option("--cache", metavar="DIR",
                     help="VM cache (default: $DBHIVE_VM_CACHE, else /var/cache/dbhive/vm "
                          "as root, ~/.cache/dbhive/vm otherwise)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def boot_options(fn):
    opts = [
        click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto",
                     show_default=True,
                     help="auto: KVM where it works (a KVM guest that hangs is retried "
                          "under TCG once, and remembered), else TCG."),
        click.option("--memory", "memory_mb", type=int, default=2048, show_default=True,
                     help="Guest memory in MiB."),
        click.option("--cpus", type=int, default=2, show_default=True, help="Guest CPUs."),
        click.option("--timeout", type=int, default=1200, show_default=True,
                     help="Seconds the whole boot may take."),
        click.option("--keep", metavar="DIR",
                     help="Keep the run's disks and console log in DIR."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress on stderr (default: when stderr is a terminal)."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def resolve_kernel(package, vmlinuz, modules, headers, offline, cache):
    from . import kernel
    if package and (vmlinuz or modules):
        raise click.UsageError("give either --kernel-package or --kernel/--modules")
    if package:
        return kernel.from_package(package, cache=cache, offline=offline)
    if vmlinuz and modules:
        return kernel.from_files(vmlinuz, modules, headers, cache=cache)
    raise click.UsageError("give --kernel-package NAME, or --kernel VMLINUZ and --modules DIR")


def _progress(flag):
    if flag is None:
        flag = sys.stderr.isatty()
    return _say if flag else None


@click.command("vm-image", context_settings=CONTEXT)
@kernel_options
@click.option("--json", "as_json", is_flag=True, help="Print what was built as JSON.")
def vm_image(package, vmlinuz, modules, headers, offline, cache, as_json):
    """Fetch and build (or find in the cache) what booting a kernel needs: the bookworm
    userland image, the kernel's modules-and-headers disk and its vmlinuz.

    \b
    Examples:
      tracer vm-image --kernel-package linux-image-5.10.0-32-cloud-amd64-unsigned
      tracer vm-image --kernel ./vmlinuz-6.1.0-47-cloud-amd64 \\
                      --modules ./lib/modules/6.1.0-47-cloud-amd64 --json
    """
    run_user(lambda: _image(package, vmlinuz, modules, headers, offline, cache, as_json))


def _image(package, vmlinuz, modules, headers, offline, cache, as_json):
    from . import image
    base = image.base_image(cache, progress=_say, offline=offline)
    k = resolve_kernel(package, vmlinuz, modules, headers, offline, cache)
    out = {"release": k.release, "source": k.source, "vmlinuz": k.vmlinuz,
           "kernel_disk": k.disk, "base_image": base.image, "guest_python": base.info["python"],
           "dbg_package": k.dbg_package}
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        for key, value in out.items():
            click.echo(f"{key:13} {value}")


@click.command("vm-run", context_settings=CONTEXT)
@kernel_options
@boot_options
@click.option("--file", "files", multiple=True, metavar="SRC[:NAME]",
              help="Copy a host file or directory to /job/NAME in the guest (repeatable).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the command's result (exit status, stdout, stderr, times) as JSON.")
@click.argument("command", nargs=-1, required=True)
def vm_run(package, vmlinuz, modules, headers, offline, cache, accel, memory_mb, cpus,
           timeout, keep, progress, files, as_json, command):
    """Boot a kernel under QEMU and run COMMAND in it (as root, in a Debian bookworm
    userland with python3, bcc, bpftool and this project on PATH: dbhive, resolver,
    tracer).  Its output is printed and its exit status returned.

    \b
    Examples:
      tracer vm-run --kernel-package linux-image-5.10.0-32-cloud-amd64-unsigned -- uname -a
      tracer vm-run --kernel-package linux-image-6.1.0-47-cloud-amd64 \\
          --file ./hive:hive -- resolver --hive /job/hive offset task_struct.files
    """
    run_user(lambda: _run(package, vmlinuz, modules, headers, offline, cache, accel,
                          memory_mb, cpus, timeout, keep, progress, files, as_json, command))


def _run(package, vmlinuz, modules, headers, offline, cache, accel, memory_mb, cpus,
         timeout, keep, progress, files, as_json, command):
    from . import image, qemu
    say = _progress(progress)
    base = image.base_image(cache, progress=say, offline=offline)
    k = resolve_kernel(package, vmlinuz, modules, headers, offline, cache)
    job = qemu.Job()
    for spec in files:
        src, _, name = spec.partition(":")
        if not os.path.exists(src):
            raise VMError(f"no such file: {src}")
        job.add_file(name or os.path.basename(os.path.abspath(src)), os.path.abspath(src))
    job.add_step("command", " ".join(shlex.quote(c) for c in command), timeout=timeout)
    r = qemu.run(k, base, job, memory_mb=memory_mb, cpus=cpus, timeout=timeout, accel=accel,
                 cache=cache, progress=say, keep=keep)
    s = r.step("command")
    if as_json:
        click.echo(json.dumps({"kernel": k.release, "accel": r.accel, "rc": s.rc,
                               "stdout": s.stdout, "stderr": s.stderr, "seconds": s.seconds,
                               "timings": r.timings}, indent=2))
    else:
        sys.stdout.write(s.stdout)
        sys.stderr.write(s.stderr)
    sys.exit(s.rc)


def run_user(fn):
    try:
        return fn()
    except DbhiveError as e:               # VMError, NoDB, a DB that cannot be read
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


@click.command("vm-verify", context_settings=CONTEXT)
@kernel_options
@boot_options
@click.option("--hive", metavar="DIR",
              help="Hive holding the kernel's DB: its DBs of that release are sent to the "
                   "guest, where the tracer picks one by build-id.")
@click.option("--db", metavar="FILE", help="Verify this DB file (instead of --hive).")
@click.option("--build-missing", is_flag=True,
              help="If the hive has no DB for the kernel, fetch its -dbg package and build "
                   "one (DWARF) first.")
@click.option("--go-probe", metavar="PROGRAM", envvar="TRACER_GO_PROBE",
              help="A build of data/go-src/tracerprobe: the Go checks run in the guest too "
                   "(default: $TRACER_GO_PROBE; without it they are skipped).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def vm_verify(package, vmlinuz, modules, headers, offline, cache, accel, memory_mb, cpus,
              timeout, keep, progress, hive, db, build_missing, go_probe, as_json):
    """Boot a kernel under QEMU and prove a DB on it: `tracer verify --ignore-btf` runs
    inside the booted kernel against the DB the hive holds for that kernel's build-id (or
    --db), and the guest's own BTF, where it has one, is checked to give identical offsets
    (`tracer offsets --ignore-btf` against `tracer offsets` from /sys/kernel/btf/vmlinux).

    Exit status: 0 every check passed and the BTF agrees; 1 a check FAILED or the BTF
    differs; 2 usage; 3 no DB for the kernel; 4 the check could not be run (fetch, image,
    boot).

    \b
    Examples:
      tracer vm-verify --kernel-package linux-image-5.10.0-32-cloud-amd64-unsigned --hive ./hive
      tracer vm-verify --kernel-package linux-image-6.1.0-47-cloud-amd64 --hive ./hive \\
          --go-probe ./tracerprobe --json
      tracer vm-verify --kernel ./vmlinuz-5.10.0-32-cloud-amd64 \\
          --modules ./lib/modules/5.10.0-32-cloud-amd64 --db ./info-5.10.0-32-cloud-amd64.db
      tracer vm-verify --kernel-package ./linux-image-5.10.0-32-cloud-amd64-unsigned_5.10.223-1_amd64.deb \\
          --offline --hive ./hive
    """
    run_user(lambda: _verify(package, vmlinuz, modules, headers, offline, cache, accel,
                             memory_mb, cpus, timeout, keep, progress, hive, db,
                             build_missing, go_probe, as_json))


def _verify(package, vmlinuz, modules, headers, offline, cache, accel, memory_mb, cpus,
            timeout, keep, progress, hive, db, build_missing, go_probe, as_json):
    from . import image, qemu, verify
    if bool(hive) == bool(db):
        raise click.UsageError("give --hive DIR or --db FILE")
    say = _progress(progress)
    k = resolve_kernel(package, vmlinuz, modules, headers, offline, cache)
    p = verify.plan(k, hive=hive, db=db, go_probe=go_probe, build_missing=build_missing,
                    cache=cache, progress=say, offline=offline)
    base = image.base_image(cache, progress=say, offline=offline)
    run = qemu.run(k, base, p.job, memory_mb=memory_mb, cpus=cpus, timeout=timeout,
                   accel=accel, cache=cache, progress=say, keep=keep)
    rep = verify.report(p, run)
    if as_json:
        click.echo(json.dumps(rep.as_dict(), indent=2))
    else:
        click.echo(rep.text())
    sys.exit(0 if rep.ok else 1)


@click.group(context_settings=CONTEXT)
def main():
    """Boot real kernels under QEMU and run the project inside them."""


main.add_command(vm_image)
main.add_command(vm_run)
main.add_command(vm_verify)
