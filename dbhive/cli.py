"""dbhive command line: build, list, show."""
from __future__ import annotations

import json
import os
import signal
import sys

import click

from typing import Optional

from . import cliutil, hive as hivemod
from .errors import EXIT_INTERRUPTED, DbhiveError

HIVE_HELP = "Hive directory (default: $DBHIVE_HOME, else /var/lib/dbhive as root, " \
            "~/.local/share/dbhive otherwise)."


# Errors a user can cause are DbhiveErrors (dbhive/errors.py) and print as one line;
# anything else is a bug in this project and shows its traceback.


_interrupted = False


def _raise_interrupt(signum, frame):
    # Remember it: a KeyboardInterrupt raised while libarchive is inside our ctypes read
    # callback is swallowed by ctypes and comes back as a read error of the archive.
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _quiet_interrupts(unraisable, _default=sys.unraisablehook):
    """The interrupt swallowed inside a ctypes callback is reported once, by `build`."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        _default(unraisable)


def fail(message, code: Optional[int] = None):
    cliutil.fail("dbhive", message, code)


class _Group(cliutil.OneLineErrorGroup):
    prog = "dbhive"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dbhive")
def main():
    """Build per-kernel type databases (structs, unions, enums, typedefs, functions) from
    distro debuginfo packages, vmlinux files or BTF, into a hive keyed by kernel identity.

    \b
    Examples:
      dbhive build /sys/kernel/btf/vmlinux --hive ./hive
      dbhive build linux-image-6.1.0-47-cloud-amd64-dbg_6.1.170-3_amd64.deb --hive ./hive --distro debian
      dbhive list --hive ./hive --json
      dbhive show --db ./hive/x86_64/db/debian/info-6.1.0-47-cloud-amd64.db task_struct
    """


@main.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--hive", "hive", default=None, help=HIVE_HELP)
@click.option("--out", default=None, help="Write a single DB file here instead of into the hive.")
@click.option("--distro", default=None, help="Distro name used in the hive path (e.g. debian).")
@click.option("--source", type=click.Choice(["btf", "dwarf"]), default=None,
              help="Type source when the input has both (default: DWARF, the complete truth).")
@click.option("--jobs", "-j", type=int, default=None,
              help="Processes for DWARF, and a thread writing the DB (default: cores; 1: one).")
@click.option("--modules", "modules", default=None, metavar="all|NAME,...",
              help="Also the package's kernel modules (their DWARF), all or these.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars (default: when stderr is a terminal).")
@click.option("--arch", default=None,
              help="The kernel's arch (uname -m) when the input cannot tell (raw BTF).")
@click.option("--force", is_flag=True,
              help="Write even a result with no types, or one with fewer than half the types "
                   "of the DB it replaces.")
@click.option("--max-btf-bytes", type=int, default=None,
              help="Largest raw BTF accepted (default 256 MiB).")
@click.option("--max-member-bytes", type=int, default=None,
              help="Largest kernel member extracted from a package (default 4 GiB).")
@click.option("--with-btf", is_flag=True,
              help="Also write the kernel's BTF beside the DB (emitted from its types when it "
                   "has none of its own) and btfhub's <release>.btf.tar.xz.")
@click.option("--btf-dir", default=None, metavar="DIR",
              help="Also write DIR/vmlinux-<release>.btf (e.g. /usr/lib/btf); implies --with-btf.")
@click.option("--with-header", is_flag=True,
              help="Also write the kernel's C header (vmlinux.h): "
                   "<hive>/<arch>/head/<distro>/<release>.h, or <DB>.h beside --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def build(input_path, hive, out, distro, source, jobs, modules, progress, arch, force,
          max_btf_bytes, max_member_bytes, with_btf, btf_dir, with_header, as_json):
    """Build the DB of one kernel from INPUT: an RPM/DEB/ddeb debuginfo package, a vmlinux
    ELF (DWARF and/or .BTF), raw BTF (/sys/kernel/btf/vmlinux, *.btf) or a btfhub
    *.btf.tar.xz archive.

    \b
    Examples:
      dbhive build /sys/kernel/btf/vmlinux --hive ./hive
      dbhive build kernel-debuginfo-4.18.0-553.el8.x86_64.rpm --hive ./hive --distro centos
      dbhive build ./vmlinux --out ./info.db --source btf
      dbhive build vmlinux-5.4.0-dbg --hive ./hive --with-btf --btf-dir /usr/lib/btf
      dbhive build ./vmlinux --out ./info.db --with-header        # and ./info.h
      dbhive build linux-image-6.1.0-47-cloud-amd64-dbg_6.1.170-3_amd64.deb --modules ext4,bridge
    """
    from .build import build as do_build
    if modules is not None and modules.strip() != "all":
        modules = [n.strip() for n in modules.split(",") if n.strip()]
        if not modules:
            fail("--modules: give `all` or module names separated by commas", 2)
    elif modules is not None:
        modules = "all"
    # SIGTERM unwinds like Ctrl-C, so temp files and the half-written DB are removed
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    sys.unraisablehook = _quiet_interrupts
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        extra = {"max_btf_bytes": max_btf_bytes} if max_btf_bytes else {}
        if max_member_bytes:
            extra["max_member_bytes"] = max_member_bytes
        res = do_build(input_path, hive=hive, out=out, distro=distro, source=source,
                       progress=progress, jobs=jobs, arch=arch, force=force,
                       with_btf=with_btf, btf_dir=btf_dir, modules=modules,
                       with_header=with_header, **extra)
    except KeyboardInterrupt:
        fail("interrupted; nothing was written", EXIT_INTERRUPTED)
    except DbhiveError as e:
        if _interrupted:
            fail("interrupted; nothing was written", EXIT_INTERRUPTED)
        fail(e)
    m = res.meta
    if as_json:
        click.echo(json.dumps({"db": res.db, "meta": m}, indent=2))
    else:
        click.echo(f"{res.db}: {m.get('release')} {m.get('arch')} build-id {m.get('build_id') or '-'}"
                   f" ({m.get('type_source')}: {m.get('structs')} structs/unions,"
                   f" {m.get('functions')} functions"
                   + (f", {m['module_count']} modules" if m.get("module_count") else "") + ")")


LIST_COLUMNS = ("release", "arch", "flavour", "distro", "build_id", "type_source", "structs",
                "functions", "source_file", "built_at")


@main.command(name="list")
@click.option("--hive", "hive", default=None, help=HIVE_HELP)
@click.option("--json", "as_json", is_flag=True, help="One JSON array with every DB's meta.")
def list_cmd(hive, as_json):
    """List the kernels in a hive with their identity.

    \b
    Example:
      dbhive list --hive ./hive --json
    """
    from . import schema
    hive = hive or hivemod.default_hive()
    rows = []
    for entry in hivemod.iter_dbs(hive):
        try:
            meta = schema.read_meta(entry.path)
            schema.check_version(meta, entry.path)
        except DbhiveError as e:    # a foreign, damaged or other-version file: say so, go on
            meta = {"error": str(e)}
        meta["db"] = entry.path
        rows.append(meta)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no kernel DBs in {hive}", err=True)
        return
    table = [("RELEASE", "ARCH", "FLAVOUR", "DISTRO", "BUILD-ID", "SOURCE", "STRUCTS", "FUNCS",
              "FROM")]
    for m in rows:
        table.append((m.get("release", "?"), m.get("arch", "?"), m.get("flavour") or "-",
                      m.get("distro", "?"), (m.get("build_id") or "-")[:16],
                      m.get("type_source", "?"), m.get("structs", "?"), m.get("functions", "?"),
                      m.get("source_file", m.get("error", ""))))
    widths = [max(len(str(r[i])) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


@main.command()
@click.option("--db", "db", required=True, type=click.Path(dir_okay=False),
              help="The DB file to read.")
@click.option("--json", "as_json", is_flag=True, help="Layout as JSON.")
@click.argument("names", nargs=-1, required=True)
def show(db, as_json, names):
    """Print the layout of structs/unions like pahole: offsets, sizes, holes, bitfields.
    NAME is `task_struct`, `struct task_struct` or `union X`; several may be given.

    \b
    Example:
      dbhive show --db info-6.1.0-47-cloud-amd64.db task_struct sock
    """
    from . import pahole_text, store
    from . import model as M
    if not os.path.isfile(db):
        fail(f"{db}: no such DB file")
    try:
        g = store.load_graph(db)
    except DbhiveError as e:
        fail(e)
    wanted = {}
    for n in names:
        parts = n.split()
        kinds = (parts[0],) if len(parts) == 2 and parts[0] in M.COMPOSITE else M.COMPOSITE
        wanted[n] = (kinds, parts[-1])
    found = {n: [] for n in names}
    for tid, t in g.named(M.COMPOSITE + (M.TYPEDEF,)):
        for n, (kinds, base) in wanted.items():
            if t.name != base:
                continue
            if t.kind in kinds and t.size is not None:
                found[n].append(tid)
            elif t.kind == M.TYPEDEF and g.types[g.strip(tid)].kind in M.COMPOSITE:
                target = g.strip(tid)
                if not g.types[target].name:
                    found[n].append(target)
    missing = [n for n, ids in found.items() if not ids]
    out = []
    for n in names:
        for tid in found[n]:
            out.append(pahole_text.layout_json(g, tid) if as_json else
                       pahole_text.format_layout(g, tid))
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo("\n\n".join(out))
    if missing:
        fail(f"not in {os.path.basename(db)}: {', '.join(missing)}", 3)


@main.command()
@click.argument("input_path", metavar="DB | RELEASE | PACKAGE | VMLINUX | BTF")
@click.option("-o", "--out", default=None, metavar="FILE",
              help="Write the header here (default: standard output).")
@click.option("--hive", default=None, help="Hive to find RELEASE in. " + HIVE_HELP)
@click.option("--source", type=click.Choice(["btf", "dwarf"]), default=None,
              help="For a vmlinux with both: read this (default DWARF).")
@click.option("--jobs", "-j", type=int, default=None, help="Processes for DWARF.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars (default: when stderr is a terminal).")
def header(input_path, out, hive, source, jobs, progress):
    """Write a kernel's types as a C header, the vmlinux.h BPF CO-RE programs include (what
    `bpftool btf dump file X format c` writes): every struct, union, enum and typedef, laid
    out by clang -target bpf exactly as in the kernel.  The input is a DB file, a release in
    the hive, or a package / vmlinux / raw BTF file (read as `dbhive build` reads it).

    \b
    Examples:
      dbhive header ./hive/x86_64/db/debian/info-6.1.0-47-cloud-amd64.db -o vmlinux.h
      dbhive header 6.1.0-47-cloud-amd64 --hive ./hive -o vmlinux.h
      dbhive header /sys/kernel/btf/vmlinux > vmlinux.h
    """
    from . import cheader, output
    from .btf.make import resolve_inputs
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        if out is not None:
            output.check_destination(out, must_exist_dir=True)
        [kernel] = resolve_inputs([input_path], hive, source=source, progress=progress,
                                  jobs=jobs)
        text = cheader.render(kernel.load_graph(), cheader.banner(kernel.meta), input_path)
        if out is None:
            sys.stdout.write(text)
        else:
            output.write_bytes(out, text.encode(), must_exist_dir=True, mode=0o644)
    except DbhiveError as e:
        fail(e)


from .btf.cli import btf as _btf_command  # noqa: E402  (the command lives in dbhive/btf/cli.py)
main.add_command(_btf_command)
from .batch import cli as _batch  # noqa: E402  (the commands live in dbhive/batch/cli.py)
main.add_command(_batch.batch)
main.add_command(_batch.index)
main.add_command(_batch.fetch)


if __name__ == "__main__":
    main()
