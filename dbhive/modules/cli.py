"""The `kobuild` command: kernel modules -> an overlay DB (default ./prev.db)."""
from __future__ import annotations

import json
import signal
import sys

import click

from .. import cliutil
from ..errors import EXIT_INTERRUPTED, DbhiveError

PROG = "kobuild"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dbhive")
@click.argument("inputs", nargs=-1, required=True, metavar="MODULE_OR_DIR...")
@click.option("-o", "--out", default="prev.db", show_default=True,
              help="The DB to write (replaced only once complete).")
@click.option("--base", default=None, metavar="DB|running",
              help="The kernel the modules are for: a kernel DB, or `running`. Types the "
                   "modules only declare get its layouts; its release must be theirs.")
@click.option("--base-btf", "base_btf", default=None, metavar="FILE",
              help="Read the modules' split .BTF on top of this kernel BTF (raw BTF such as "
                   "/sys/kernel/btf/vmlinux, or an ELF with .BTF) instead of their DWARF.")
@click.option("--source", type=click.Choice(["dwarf", "btf"]), default=None,
              help="Type source (default: btf with --base-btf, else dwarf).")
@click.option("--max-module-bytes", type=click.IntRange(min=1), default=None,
              help="Largest decompressed module (or raw BTF file) accepted (default 4 GiB).")
@click.option("--jobs", "-j", type=int, default=None,
              help="Worker processes (default: up to 2 for 4 modules or more).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def main(inputs, out, base, base_btf, source, max_module_bytes, jobs, progress, as_json):
    """Build a DB of kernel modules' types and functions, locally and offline.

    MODULE_OR_DIR: .ko, .ko.debug, .ko.xz, .ko.zst or .ko.gz files, or directories walked
    for them.  The DB has the shape of a kernel DB (dbhive build), with `funs.module` naming
    each function's module; the resolver and the surftrace client read it as an overlay
    (./prev.db, $LBC_PREVDB, `resolver --overlay DB`).

    \b
    Examples:
      kobuild ./ko/                                 # writes ./prev.db
      kobuild ./ko/ -o my.db --base running         # layouts of declared-only types too
      kobuild mymod.ko --base ./hive/x86_64/db/debian/info-6.1.0-47-cloud-amd64.db
      kobuild /lib/modules/6.1.0-47-cloud-amd64/kernel/fs --base-btf vmlinux.btf -o fs.db
      LBC_PREVDB=$PWD/prev.db surftrace -m local -d info.db -S 'p mymod_xmit len=%0->len'
    """
    from .kobuild import kobuild
    signal.signal(signal.SIGTERM, _interrupt)
    if progress is None:
        progress = sys.stderr.isatty()
    try:
        extra = {"max_module_bytes": max_module_bytes} if max_module_bytes else {}
        res = kobuild(inputs, out=out, base=base, base_btf=base_btf, source=source,
                      jobs=jobs, progress=progress, **extra)
    except KeyboardInterrupt:
        cliutil.fail(PROG, "interrupted; nothing was written", EXIT_INTERRUPTED)
    except DbhiveError as e:
        cliutil.fail(PROG, e)
    m = res.meta
    if as_json:
        d = dict(m)
        d["modules"] = json.loads(m["modules"])
        click.echo(json.dumps({"db": res.db, "meta": d}, indent=2))
        return
    names = ", ".join(x["name"] for x in res.modules[:8])
    more = f" and {len(res.modules) - 8} more" if len(res.modules) > 8 else ""
    click.echo(f"{res.db}: {len(res.modules)} module{'s' if len(res.modules) != 1 else ''} "
               f"({names}{more}) for {m.get('release') or 'an unknown kernel'} "
               f"{m.get('arch') or ''} ({m.get('type_source')}: {m.get('structs')} "
               f"structs/unions, {m.get('functions')} functions"
               + (f", {m['base_types']} layouts from the base" if m.get("base_types") else "")
               + ")")


if __name__ == "__main__":
    main()
