"""`tracer` command line: offsets, verify, start.

User errors (no offsets source, unsupported kernel, no BPF) print one line on stderr and exit
non-zero; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import json
import os
import sys
import click

from dbhive.cliutil import OneLineErrorGroup, warn
from dbhive.errors import InputError, SetupError

from .kernel import SYS_BTF, bpf_available, check_supported, running, tracefs

EXAMPLES = """
\b
Examples:
  tracer offsets                                # from the kernel's BTF when it has one
  tracer offsets --ignore-btf --hive ./hive --json
  tracer verify --ignore-btf --db ./info.db     # prove a DB's offsets on this kernel
  tracer verify --json --go-probe ./tracerprobe
  tracer start --go-delay 0 --events            # follow Go processes, print events
  tracer start --pid 1234 --pid 5678
  tracer offsets --db info-6.1.0-47-cloud-amd64.db --overlay mods.db   # kobuild's overlay
\b
Offsets come from the kernel's BTF (/sys/kernel/btf/vmlinux, /usr/lib/btf/vmlinux-R.btf, or
an ELF vmlinux with .BTF under /boot, /lib/modules/R, /usr/lib/debug whose build-id is the
running kernel's) unless --ignore-btf; else from the hive DB of the running kernel (build-id
match; a release-only match warns).  --db FILE uses that DB and nothing else.
An overlay DB of modules (kobuild; --overlay DB, else $LBC_PREVDB, else ./prev.db, as for
the resolver) is consulted before that source and shown as the source of what it answers;
one built for another kernel (release or arch) is refused (exit 3).  --no-overlay: none.
"""


def _source_opts(f):
    # click lists options in the reverse of the order they are applied here
    f = click.option("--no-overlay", is_flag=True,
                     help="No overlay DB (ignore $LBC_PREVDB and ./prev.db).")(f)
    f = click.option("--overlay", metavar="DB", type=click.Path(dir_okay=False),
                     help="Overlay DB of modules (kobuild), consulted first; default "
                          "$LBC_PREVDB, else ./prev.db when it exists.")(f)
    f = click.option("--ignore-btf", is_flag=True,
                     help="Do not use the kernel's BTF (act as on a kernel without it).")(f)
    f = click.option("--db", "db", metavar="FILE", help="Use this DB (and nothing else).")(f)
    f = click.option("--hive", metavar="DIR",
                     help="Hive to find the running kernel's DB in (default: $DBHIVE_HOME, "
                          "else /var/lib/dbhive as root).")(f)
    return f


class _Group(OneLineErrorGroup):
    prog = "tracer"


def _source(hive, db, ignore_btf, overlay, no_overlay, k):
    from .offsets import open_source
    if hive and db:
        raise click.UsageError("give --hive or --db, not both")
    if overlay and no_overlay:
        raise click.UsageError("give --overlay or --no-overlay, not both")
    src = open_source(k, hive=hive, db=db, ignore_btf=ignore_btf,
                      overlay=None if no_overlay else (overlay or "auto"))
    if db and not ignore_btf and os.path.exists(SYS_BTF):
        src.warnings.append(f"using --db {db}; the kernel's BTF ({SYS_BTF}) is not consulted "
                            f"when a DB is named")
    return src


def _need_bpf():
    why = bpf_available()
    if why:
        raise SetupError(why)
    tracefs()


@click.group(cls=_Group, epilog=EXAMPLES,
             context_settings={"help_option_names": ["-h", "--help"]})
def main():
    """bcc tracer for kernels without BTF: fills the members_offset and proc_info_map eBPF
    maps from the resolver, follows Go processes, and proves the offsets on the live kernel."""


@main.command(epilog=EXAMPLES)
@_source_opts
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def offsets(hive, db, ignore_btf, overlay, no_overlay, as_json):
    """What goes into members_offset, and where each value came from."""
    from .offsets import resolve_all
    k = running()
    check_supported(k)
    src = _source(hive, db, ignore_btf, overlay, no_overlay, k)
    vals = resolve_all(src.resolver, k.machine)
    if as_json:
        click.echo(json.dumps({"kernel": {"release": k.release, "arch": k.machine,
                                          "build_id": k.build_id},
                               "source": src.label, "db_kernel": src.resolver.kernel,
                               "overlays": src.resolver.overlay_files,
                               "fields": [v.as_dict(src.label) for v in vals],
                               "warnings": src.warnings}, indent=2))
        return
    for w in src.warnings:
        warn("tracer", w)
    rows = [("field", "value", "path", "source")]
    for v in vals:
        rows.append((v.member.name, v.shown(), v.path or "/".join(v.member.paths),
                     (v.source or src.label) if v.ok else f"absent: {v.absent}"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}")


@main.command(epilog=EXAMPLES)
@_source_opts
@click.option("--go-probe", metavar="PROGRAM", envvar="TRACER_GO_PROBE",
              help="A build of data/go-src/tracerprobe: also prove the Go side (goid, fd, "
                   "byte counts through proc_info_map).  Default: $TRACER_GO_PROBE.")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for an event.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def verify(hive, db, ignore_btf, overlay, no_overlay, go_probe, timeout, as_json):
    """Prove the offsets on the live kernel: read known sockets, a file, this task and a Go
    program through members_offset/proc_info_map and compare with what user space knows.
    Exit 0 when every check passes, 1 when one fails."""
    from .verify import Verifier, format_table
    k = running()
    check_supported(k)
    _need_bpf()
    if go_probe and not os.access(go_probe, os.X_OK):
        raise InputError(f"--go-probe {go_probe}: not an executable file")
    src = _source(hive, db, ignore_btf, overlay, no_overlay, k)
    res = Verifier(src, k, go_probe=go_probe, timeout=timeout).run()
    if as_json:
        click.echo(json.dumps(res.as_dict(), indent=2))
    else:
        for w in res.warnings:
            warn("tracer", w)
        click.echo(format_table(res))
    sys.exit(0 if res.ok else 1)


@main.command(epilog=EXAMPLES)
@_source_opts
@click.option("--go-delay", default=60.0, show_default=True, metavar="S",
              help="Seconds after exec before a new process is analysed (the Go runtime "
                   "finishes starting).")
@click.option("--pid", "pids", multiple=True, type=int,
              help="Follow only these processes (and their forks); repeatable.")
@click.option("--events", is_flag=True, help="Print one JSON line per TCP write/read and Go "
                                             "TLS write/read (and attach/detach) on stdout.")
def start(hive, db, ignore_btf, overlay, no_overlay, go_delay, pids, events):
    """Fill the maps and follow Go processes until Ctrl-C / SIGTERM (then detach everything,
    clear the maps, exit 0).  Status lines go to stderr."""
    from .start import Tracer
    k = running()
    check_supported(k)
    _need_bpf()
    src = _source(hive, db, ignore_btf, overlay, no_overlay, k)
    code = Tracer(src, k, go_delay=go_delay, pids=pids or None, events=events).run()
    sys.exit(code)


# booting other kernels under QEMU (tracer/vm/)
from .vm.cli import vm_image, vm_run, vm_verify  # noqa: E402

main.add_command(vm_verify)
main.add_command(vm_run)
main.add_command(vm_image)


if __name__ == "__main__":
    main()
