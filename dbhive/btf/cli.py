"""`dbhive btf`: BTF out of the hive -- the full BTF of a kernel, or the minimal BTF given
BPF objects need (registered in dbhive/cli.py)."""
from __future__ import annotations

import json
import sys

import click

from ..cliutil import fail, warn
from ..errors import DbhiveError
from . import profiles

PROG = "dbhive"


@click.command(name="btf")
@click.argument("inputs", nargs=-1, metavar="[DB | RELEASE | PACKAGE | VMLINUX | BTF]...")
@click.option("-o", "--out", default=None,
              help="Output file; a directory with --all (one <distro>/<arch>/<release>.btf "
                   "per kernel).")
@click.option("--for", "objects", multiple=True, metavar="OBJECT",
              help="A BPF object (clang -target bpf -g): write only the minimal BTF its CO-RE "
                   "relocations need.  Repeat for several objects.")
@click.option("--hive", default=None, help="Hive to find RELEASE in / to take --all from.")
@click.option("--all", "all_kernels", is_flag=True, help="Every kernel DB of the hive.")
@click.option("--archive", default=None, metavar="FILE.tar.xz",
              help="Also (or only) pack the output(s) into one .tar.xz.")
@click.option("--profile", "profile_name", default="current", show_default=True,
              help=f"Who reads the BTF: {profiles.NAMES_HELP}.")
@click.option("--byte-order", type=click.Choice(["target", "little", "big"]),
              default="target", show_default=True,
              help="Byte order of the output (target: the kernel's).")
@click.option("--source", type=click.Choice(["btf", "dwarf"]), default=None,
              help="For a vmlinux with both: read this (default DWARF).")
@click.option("--jobs", "-j", type=int, default=None, help="Processes for DWARF.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
def btf(inputs, out, objects, hive, all_kernels, archive, profile_name, byte_order, source,
        jobs, progress, as_json):
    """Write BTF for kernels of the hive: the full BTF of each (for libbpf's
    btf_custom_path on a kernel without BTF, or /usr/lib/btf/vmlinux-<release>.btf), or with
    --for the minimal BTF the given BPF objects' CO-RE relocations need (what
    `bpftool gen min_core_btf` makes).  An input is a DB file, a release in the hive, or a
    package / vmlinux / raw BTF file (read as `dbhive build` reads it).

    \b
    Examples:
      dbhive btf ./hive/x86_64/db/debian/info-6.1.0-47-cloud-amd64.db -o vmlinux-6.1.0-47.btf
      dbhive btf 6.1.0-47-cloud-amd64 --hive ./hive -o vmlinux.btf --profile libbpf-0.5
      dbhive btf linux-image-6.1.0-47-cloud-amd64-dbg_6.1.170-3_amd64.deb -o vmlinux.btf
      dbhive btf info.db --for prog.bpf.o --for other.bpf.o -o min.btf
      dbhive btf --hive ./hive --all --for prog.bpf.o -o ./min-btf/ --archive min-btf.tar.xz
    """
    from . import make
    from .ext import read_object
    if progress is None:
        progress = sys.stderr.isatty()
    if not inputs and not all_kernels:
        fail(PROG, "name a DB, a release, a package or a vmlinux (or --hive H --all)", 2)
    if out is None and archive is None:
        fail(PROG, "say where to write: -o FILE (-o DIR with --all) and/or --archive F.tar.xz",
             2)
    if archive is not None and not archive.endswith((".tar.xz", ".txz")):
        fail(PROG, f"{archive}: the archive is a .tar.xz", 2)
    try:
        prof = profiles.profile(profile_name)
        objs = [read_object(p) for p in objects]        # bad objects fail before any work
        kernels = make.resolve_inputs(list(inputs), hive, all_kernels, source, progress, jobs)
        tree = all_kernels or len(kernels) > 1
        bar = _bar(progress and len(kernels) > 1, len(kernels))
        outputs = []
        for k in kernels:
            outputs.append(make.minimal_btf(k, objs, prof, byte_order) if objs else
                           make.full_btf(k, prof, byte_order))
            bar.update(1)
        bar.close()
        written = make.write_outputs(outputs, out, archive, tree=tree)
    except DbhiveError as e:
        fail(PROG, e)
    if as_json:
        click.echo(json.dumps({"written": written, "kernels": [o.summary() for o in outputs]},
                              indent=2))
        return
    for o in outputs:
        e = o.emitted
        what = "minimal BTF" if objs else "BTF"
        line = (f"{o.kernel.release} {o.kernel.arch}: {what}, {len(e.data)} bytes, "
                f"{sum(e.counts.values())} records (profile {e.profile}, {e.byteorder}-endian)")
        if o.relocations:
            r = o.relocations
            line += f"; {r['satisfied']}/{r['total']} relocations satisfied"
        click.echo(line)
        for note in e.notes:
            warn(PROG, f"{o.kernel.release}: {note}")
        for miss in o.relocations.get("unsatisfied", [])[:10] if o.relocations else []:
            click.echo(f"  not on this kernel: {miss}")
    for p in written:
        click.echo(f"wrote {p}")


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(on: bool, total: int):
    if not on:
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, unit="kernel", desc="BTF", dynamic_ncols=True, leave=False)
