"""`resolver` command line: a thin layer over resolver.api.

Errors a person can cause (unknown member, no DB, bad expression) print one line on stderr
and exit non-zero; no tracebacks.
"""
from __future__ import annotations

import csv
import json
import sys

import click

from dbhive.cliutil import OneLineErrorGroup, fail, warn

from .errors import ResolverError

EXAMPLES = """
\b
Examples:
  resolver offset task_struct.files sock.__sk_common.skc_family file.f_path.dentry
  resolver offset 'task_struct->files->fdt' --json
  resolver --db info-6.1.0-47-cloud-amd64.db struct task_struct
  resolver --hive ./hive --release 6.1.0-47-cloud-amd64 func do_filp_open
  resolver matrix --hive ./hive task_struct.files sock.__sk_common.skc_state --csv
  resolver expr 'p wake_up_new_task comm=%0->comm' 'r do_filp_open pos=$retval->f_pos'
  resolver serve --hive ./hive --port 8123
\b
The kernel: --db FILE, or --hive DIR --release R [--arch A], or (default) the running
kernel matched by release, arch and build-id against the hive ($DBHIVE_HOME,
/var/lib/dbhive for root, ~/.local/share/dbhive otherwise).  An overlay DB of custom
modules (--overlay DB, else $LBC_PREVDB, else ./prev.db) is consulted first; one built for
another kernel (release or arch) than the DB is refused (exit 3).
"""


class _Ctx:
    def __init__(self, db, hive, release, arch, build_id, overlay):
        self.db, self.hive, self.release, self.arch = db, hive, release, arch
        self.build_id, self.overlay = build_id, overlay
        self._resolver = None

    def resolver(self):
        if self._resolver is None:
            from .api import Resolver
            self._resolver = Resolver.open(db=self.db, hive=self.hive, release=self.release,
                                           arch=self.arch, build_id=self.build_id,
                                           overlay=self.overlay)
            for w in self._resolver.warnings:
                warn("resolver", w)
        return self._resolver


class _Group(OneLineErrorGroup):
    prog = "resolver"


@click.group(cls=_Group, epilog=EXAMPLES,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", "db", type=click.Path(dir_okay=False), help="Use this DB file.")
@click.option("--hive", type=click.Path(file_okay=False), help="Hive directory.")
@click.option("--release", help="Kernel release (uname -r) to look up in the hive.")
@click.option("--arch", help="Architecture (uname -m); default: this machine's.")
@click.option("--build-id", "build_id", help="Required GNU build-id of the kernel.")
@click.option("--overlay", type=click.Path(dir_okay=False),
              help="Overlay DB (custom modules); default $LBC_PREVDB or ./prev.db.")
@click.option("--no-overlay", is_flag=True, help="Ignore $LBC_PREVDB and ./prev.db.")
@click.pass_context
def main(ctx, db, hive, release, arch, build_id, overlay, no_overlay):
    """Where is X in this kernel?  Offsets, layouts, prototypes and surftrace expressions
    from a dbhive kernel DB, offline."""
    ov = None if no_overlay else (overlay or "auto")
    ctx.obj = _Ctx(db, hive, release, arch, build_id, ov)


def _store(name):
    def cb(ctx, _param, value):
        if value is not None and value is not False:
            setattr(ctx.find_object(_Ctx), name, value)
        return value
    return cb


def kernel_options(f):
    """The kernel-choice options, accepted after the subcommand too
    (`resolver offset --db X ...`, `resolver serve --hive DIR`)."""
    opts = [
        click.option("--db", "db_", type=click.Path(dir_okay=False), expose_value=False,
                     callback=_store("db"), help="Use this DB file."),
        click.option("--hive", "hive_", type=click.Path(file_okay=False), expose_value=False,
                     callback=_store("hive"), help="Hive directory."),
        click.option("--release", "release_", expose_value=False, callback=_store("release"),
                     help="Kernel release to look up in the hive."),
        click.option("--arch", "arch_", expose_value=False, callback=_store("arch"),
                     help="Architecture (default: this machine's)."),
        click.option("--build-id", "build_id_", expose_value=False,
                     callback=_store("build_id"), help="Required GNU build-id."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _kernel_line(r) -> str:
    k = r.kernel
    return (f"# kernel {k['release']} {k['arch']} build-id {k['build_id'] or '-'}  "
            f"db {k['db']}")


def _fmt_offset(o) -> str:
    if o.bit_size is not None:
        return (f"offset {o.offset} bit {o.bit_offset} width {o.bit_size} "
                f"(unit {o.size})  {o.type}")
    return f"offset {o.offset}  size {o.size}  {o.type}"


@main.command()
@kernel_options
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object for all paths.")
@click.pass_obj
def offset(obj, paths, as_json):
    """Byte offsets of member paths: TYPE.member[.member...], TYPE.arr[3], TYPE->ptr->member."""
    r = obj.resolver()
    res = r.offsets(paths)
    worst = 0
    for v in res.values():
        if isinstance(v, ResolverError):
            worst = worst or v.exit_code
        elif isinstance(v, LookupError):
            worst = worst or 1
    if as_json:
        out = {"kernel": r.kernel, "offsets": {}}
        for p, v in res.items():
            out["offsets"][p] = {"error": str(v)} if isinstance(v, LookupError) else v.as_dict()
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(_kernel_line(r))
        width = max(len(p) for p in res)
        for p, v in res.items():
            if isinstance(v, LookupError):
                click.echo(f"{p:<{width}}  {v}")
                continue
            if v.hops:
                hops = " -> ".join(str(h.offset) for h in v.hops)
                click.echo(f"{p:<{width}}  hops {hops}; last: {_fmt_offset(v)}")
            else:
                click.echo(f"{p:<{width}}  {_fmt_offset(v)}")
            if v.note:
                click.echo(f"resolver: note: {v.note}", err=True)
    if worst:
        sys.exit(worst)


@main.command()
@kernel_options
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def struct(obj, name, as_json):
    """Top-level members of a struct/union (or typedef of one)."""
    r = obj.resolver()
    s = r.struct(name)
    if as_json:
        d = s.as_dict()
        d["kernel"] = r.kernel
        click.echo(json.dumps(d, indent=2))
        return
    click.echo(_kernel_line(r))
    if s.layouts > 1:
        click.echo(f"resolver: note: {s.name} has {s.layouts} layouts; showing the first",
                   err=True)
    click.echo(f"{s.name} {{  /* size {s.size} */")
    for m in s.members:
        name = m.name or "<anonymous>"
        if m.bit_size is not None:
            loc = f"{m.offset}:{m.bit_offset} {m.size} bits {m.bit_size}"
            click.echo(f"    {m.type:<32} {name + ':' + str(m.bit_size) + ';':<28} /* {loc} */")
        else:
            click.echo(f"    {m.type:<32} {name + ';':<28} /* {m.offset} {m.size} */")
    click.echo("};")


@main.command()
@kernel_options
@click.option("--json", "as_json", is_flag=True, help="(default) one JSON object per line")
@click.pass_obj
def dump(obj, as_json):
    """Every struct/union of the kernel, one JSON object per line."""
    r = obj.resolver()
    for s in r.dump():
        click.echo(json.dumps(s.as_dict(), separators=(",", ":")))


@main.command()
@kernel_options
@click.argument("names", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def func(obj, names, as_json):
    """Prototype of functions: return type, parameter names and types."""
    r = obj.resolver()
    out, worst = {}, 0
    for n in names:
        try:
            out[n] = r.func(n)
        except ResolverError as e:
            out[n] = e
            worst = worst or e.exit_code
    if as_json:
        click.echo(json.dumps({"kernel": r.kernel, "functions": {
            n: ({"error": str(v)} if isinstance(v, Exception) else [f.as_dict() for f in v])
            for n, v in out.items()}}, indent=2))
    else:
        click.echo(_kernel_line(r))
        for n, v in out.items():
            if isinstance(v, Exception):
                click.echo(f"{n}: {v}")
            else:
                for f in v:
                    where = f"  /* {f.file}:{f.line} */" if f.file else ""
                    click.echo(f"{f.prototype()};{where}")
    if worst:
        sys.exit(worst)


@main.command()
@kernel_options
@click.argument("paths", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--csv", "as_csv", is_flag=True)
@click.pass_obj
def matrix(obj, paths, as_json, as_csv):
    """Offsets of member paths in every kernel of the hive (one row per kernel)."""
    from .matrix import build_matrix
    rows = build_matrix(paths, hive=obj.hive, arch=obj.arch)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return

    def cell(v):
        if "error" in v:
            return "-"
        if v.get("bit_size") is not None:
            return f"{v['offset']}:{v['bit_offset']}/{v['bit_size']}"
        return str(v["offset"])

    header = ["release", "arch", "build_id"] + list(paths)
    table = [[row["kernel"]["release"], row["kernel"]["arch"], row["kernel"]["build_id"] or ""]
             + [cell(row["offsets"][p]) for p in paths] for row in rows]
    if as_csv:
        w = csv.writer(sys.stdout)
        w.writerow(header)
        w.writerows(table)
        return
    if not table:
        click.echo("(the hive has no DBs)")
        return
    table_h = [["release", "arch"] + list(paths)] + [t[:2] + t[3:] for t in table]
    widths = [max(len(str(r[i])) for r in table_h) for i in range(len(table_h[0]))]
    for r_ in table_h:
        click.echo("  ".join(str(c).ljust(w) for c, w in zip(r_, widths)).rstrip())
    click.echo("(- = absent in that kernel; a:b/c = bitfield at byte a, bit b, width c)",
               err=True)


EXPR_EXAMPLES = """
\b
Examples:
  resolver expr 'p wake_up_new_task comm=%0->comm' 'r do_filp_open pos=$retval->f_pos'
  resolver expr 'P /usr/bin/myapp:handle_req id=%0->id name=%0->name'
  resolver expr 'R libssl.so.3:SSL_write ret=$retval'          # a library via ldconfig
  resolver expr 'P ./goserver:crypto/tls.(*Conn).Write len=%2'  # Go: register ABI words
  resolver expr 'R ./goserver:crypto/tls.(*Conn).Write n=$retval'  # Go: a probe per RET
  resolver expr --apply 'P libc:fputs s=%0 fd=%1->_fileno'      # into tracefs, events out
\b
P/R (uprobes) need no kernel DB: types come from the binary's DWARF, or from a debug file
found by build-id under --debug-dir (default /usr/lib/debug).  Go binaries: %N is argument
word N (ax bx cx di si r8 r9 r10 r11 / x0..x15 from Go 1.17 amd64 / 1.18 arm64, else
8(SP)+8N); R never becomes a uretprobe.
"""


@main.command(epilog=EXPR_EXAMPLES)
@kernel_options
@click.argument("probes", nargs=-1, required=True)
@click.option("-a", "--reg-arch", "expr_arch", type=click.Choice(["x86_64", "x86", "aarch64"]),
              help="Register names of this arch for kernel probes (default: the DB's).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per probe (with --apply: per event).")
@click.option("--surftrace", "as_surftrace", is_flag=True,
              help="Print exactly what `surftrace -S` prints (a dict per probe).")
@click.option("--compat", is_flag=True,
              help="Translate exactly as surftrace does (no bitfield fetches, "
                   "no $retval member chains).")
@click.option("--debug-dir", "debug_dirs", multiple=True, type=click.Path(file_okay=False),
              help="Where debug files are looked up by build-id (default /usr/lib/debug).")
@click.option("--apply", "apply_", is_flag=True,
              help="Write the uprobe lines into tracefs, print their events until Ctrl-C "
                   "(or --duration/--count), then remove them.")
@click.option("--duration", type=float, help="With --apply: stop after this many seconds.")
@click.option("--count", type=int, help="With --apply: stop after this many events.")
@click.option("--group", help="With --apply: the event group (default dbhive_<pid>).")
@click.pass_obj
def expr(obj, probes, expr_arch, as_json, as_surftrace, compat, debug_dirs, apply_, duration,
         count, group):
    """Translate surftrace expressions to kprobe_events / uprobe_events lines."""
    from .expr import translate
    from .uprobe.probe import is_uprobe_line
    kernel = [p for p in probes if p.strip() and not is_uprobe_line(p)]
    r = obj.resolver() if kernel else None
    arch = expr_arch or (r.kernel.get("arch") if r else None) or "x86_64"
    out = translate(r, list(probes), arch=arch, compat=compat, uprobes=True,
                    debug_dirs=tuple(debug_dirs) or None)
    if apply_:
        _apply(out, as_json, duration, count, group)
        return
    for p in out:
        if as_json:
            click.echo(json.dumps(p.as_dict()))
        elif as_surftrace:
            click.echo(repr(p.surftrace_dict()))
        else:
            click.echo(p.line)
            if p.filter:
                click.echo(f"# filter: {p.filter}")
            for note in getattr(p, "notes", ()):
                click.echo(f"# {note}")


def _apply(out, as_json, duration, count, group):
    from .uprobe.apply import run
    bad = [p for p in out if p.type not in ("P", "R")]
    if bad:
        fail("resolver", f"--apply writes uprobes only; {bad[0].source!r} is a kernel probe", 2)

    def ready(applied):
        click.echo(f"# applied {len(applied.events)} uprobe(s) in group {applied.group} "
                   f"({applied.base}); Ctrl-C removes them", err=True)
        for p in out:
            click.echo(f"# {p.line}", err=True)

    n = run(out, lambda line: click.echo(line), as_json=as_json, duration=duration,
            count=count, group=group, ready=ready)
    click.echo(f"# {n} event(s); probes removed", err=True)


@main.command()
@kernel_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8123, show_default=True, type=int)
@click.option("--deadline", default=30.0, show_default=True, type=float,
              help="Seconds one request may take, first byte to reply.")
@click.pass_obj
def serve(obj, host, port, deadline):
    """Serve the surftrace/pylcc "lbc" protocol (POST /lbc) and a JSON API (/api/...)."""
    from .server import serve_forever
    try:
        serve_forever(hive=obj.hive, db=obj.db, host=host, port=port, overlay=obj.overlay,
                      request_deadline=deadline)
    except OSError as e:
        fail("resolver", f"cannot serve on {host}:{port}: {e.strerror or e}", 1)


# The Go side's commands (resolver/golang/cli.py), imported only when used: they pull in
# a disassembler and DWARF code the kernel commands do not need.
_LAZY = {"go": "go_command", "elf": "elf_command"}


def _lazy_command(name: str):
    try:
        from .golang import cli as gcli
    except ImportError:
        return None
    except Exception as e:       # a broken sibling module must not break the kernel CLI
        print(f"resolver: warning: Go commands unavailable ({e})", file=sys.stderr)
        return None
    return getattr(gcli, _LAZY[name], None)


def _list_commands(self, ctx):
    return sorted(set(click.Group.list_commands(self, ctx)) | set(_LAZY))


def _get_command(self, ctx, name):
    cmd = click.Group.get_command(self, ctx, name)
    if cmd is None and name in _LAZY:
        cmd = _lazy_command(name)
        if cmd is not None:
            self.add_command(cmd, name)
    return cmd


_Group.list_commands = _list_commands
_Group.get_command = _get_command


if __name__ == "__main__":
    main()
