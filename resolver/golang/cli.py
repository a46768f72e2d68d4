"""`resolver go` and `resolver elf`: thin click commands over report.py and elfsyms.py.

    resolver go ./server [--json] [--symbols FILE] [--offsets FILE]
    resolver go ./server --types ['crypto/tls.*'] [--json]
    resolver go --pid 1234 [--json]
    resolver elf ./libssl.so.3 --symbols SSL_write,SSL_read [--json]
"""
from __future__ import annotations

import json
from typing import List, Optional

import click

from dbhive.cliutil import one_line_errors
from dbhive.elf import ElfFile, open_regular
from dbhive.errors import InputError, NoSuchType

from ..elfsyms import openssl_version, resolve_symbols
from .report import GoReport, analyze_go_binary, analyze_pid, open_types
from .typeinfo import Layout

MAX_LIST_BYTES = 1 << 20        # a --symbols/--offsets list file


def _read_list(path: Optional[str]) -> Optional[List[str]]:
    """Names one per line (or comma separated); '#' starts a comment."""
    if path is None:
        return None
    with open_regular(path, "list file") as fh:
        raw = fh.read(MAX_LIST_BYTES + 1)
    if len(raw) > MAX_LIST_BYTES:
        raise InputError(f"{path}: larger than {MAX_LIST_BYTES} bytes: not a list of names")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file (a list of names, one per line)") from None
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        names.extend(x.strip() for x in line.split(",") if x.strip())
    return names


def _hex(v) -> str:
    return "-" if v is None else f"0x{v:x}"


def _print_report(r: GoReport) -> None:
    click.echo(f"path      {r.path}")
    click.echo(f"arch      {r.arch}  pie={'yes' if r.pie else 'no'}  cgo={'yes' if r.cgo else 'no'}")
    click.echo(f"version   {r.version or 'unknown'}  (from {r.version_source})")
    if r.pid is not None:
        click.echo(f"pid       {r.pid}  load bias {_hex(r.load_bias)}")
    if r.pclntab:
        click.echo(f"pclntab   magic 0x{r.pclntab['magic']:08x} ({r.pclntab['go_range']}), "
                   f"{r.pclntab['functions']} functions")
    mods = r.modules or {}
    if mods.get("path"):
        click.echo(f"module    {mods['path']}")
    for dep, ver in sorted((mods.get("deps") or {}).items()):
        click.echo(f"  dep     {dep} {ver}")
    click.echo("symbols   (address, file offset, size, RET file offsets)")
    for name, s in r.symbols.items():
        if s is None:
            click.echo(f"  {name}: absent")
            continue
        rets = "none (no RET: tail calls/panics only)" if s["no_return"] else \
            ", ".join(_hex(x) for x in s["returns"] or [])
        click.echo(f"  {name}: {_hex(s['address'])} off {_hex(s['file_offset'])} size {s['size']}"
                   f" [{s['source']}] returns {rets}")
    t = r.typeinfo or {}
    if t.get("available"):
        click.echo(f"typeinfo  {t['from_typeinfo']} of {t['requested']} offsets from type "
                   f"descriptors ({t['typeinfo_answered']} answered by them; "
                   f"{t['typelinks']} typelinks, {t['itabs']} itabs)")
    else:
        click.echo(f"typeinfo  unavailable ({t.get('reason')})")
    click.echo("offsets")
    for key, o in r.offsets.items():
        val = "unknown" if o["offset"] is None else str(o["offset"])
        why = f" ({o['reason']})" if o.get("reason") else ""
        also = f" = {', '.join(o['checked'])}" if o.get("checked") else ""
        bad = "".join(f"  CONFLICT {s} says {v}" for s, v in (o.get("conflicts") or {}).items())
        click.echo(f"  {key} = {val}  [{o['source']}{also}]{why}{bad}")
    click.echo("itabs")
    for name, addr in r.itabs.items():
        click.echo(f"  {name}: {_hex(addr) if addr is not None else 'absent'}")
    for o in r.openssl:
        v = (o.get("version") or {}).get("version", "unknown") if "error" not in o else o["error"]
        click.echo(f"openssl   {o['path']}{' (static)' if o.get('static') else ''}: {v}")
    for w in r.warnings:
        click.echo(f"warning   {w}")


@click.command("go")
@click.argument("binary", required=False, type=click.Path(dir_okay=False))
@click.option("--pid", type=int, help="Resolve a running process (/proc/PID/exe).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--symbols", "symbols_file", type=click.Path(dir_okay=False),
              help="File of function names (one a line) instead of the standard list.")
@click.option("--offsets", "offsets_file", type=click.Path(dir_okay=False),
              help="File of pkg.Struct.field keys instead of the standard list.")
@click.option("--types", "types_pattern", is_flag=False, flag_value="*", default=None,
              metavar="[PATTERN]",
              help="List the struct layouts recovered from the binary's runtime type "
                   "descriptors: all, those whose full name matches a glob PATTERN, or the "
                   "one struct named PATTERN.")
@one_line_errors("resolver")
def go_command(binary, pid, as_json, symbols_file, offsets_file, types_pattern):
    """Go version, probe offsets, RET offsets, struct offsets and itabs of a Go executable.

    Works on stripped binaries too: symbols from the pclntab, struct offsets from the
    binary's own type descriptors, else from the generated table keyed by Go version.  Every
    offset says where it came from (dwarf, typeinfo, table:<toolchain>, unknown) and which
    other sources agree; a disagreement is shown, never hidden.

    \b
    Examples:
      resolver go ./server
      resolver go ./server --json
      resolver go --pid 1234 --json
      resolver go ./server --symbols my-symbols.txt --offsets my-fields.txt
      resolver go ./server --types                      # every struct with a descriptor
      resolver go ./server --types 'crypto/tls.*'
      resolver go ./server --types internal/poll.FD --json
    """
    if (binary is None) == (pid is None):
        raise click.UsageError("give either a BINARY or --pid PID")
    if types_pattern is not None:
        _list_types(binary if binary is not None else f"/proc/{pid}/exe", types_pattern, as_json)
        return
    symbols, offsets = _read_list(symbols_file), _read_list(offsets_file)
    if pid is not None:
        report = analyze_pid(pid, symbols, offsets)
    else:
        report = analyze_go_binary(binary, symbols, offsets)
    if as_json:
        click.echo(report.to_json(indent=2))
    else:
        _print_report(report)


GLOB_CHARS = "*?["


def _list_types(path: str, pattern: str, as_json: bool) -> None:
    types, version = open_types(path)
    if any(c in pattern for c in GLOB_CHARS):
        layouts = types.structs(pattern)
    else:
        layout, why = types.find_struct(pattern)       # BadPath if not <package>.<Type>
        if layout is None:
            found = types.structs(pattern)      # reachable only through the closure
            if not found:
                raise NoSuchType(f"{path}: {why} (try a glob such as '{pattern}*')")
            layout = found[0]
        layouts = [layout]
    if as_json:
        click.echo(json.dumps({"path": path, "version": version,
                               "structs": [lay.to_dict() for lay in layouts]}, indent=2))
        return
    for lay in layouts:
        _print_layout(lay)
    click.echo(f"/* {len(layouts)} struct(s) from the type descriptors of {path}"
               f" ({version or 'Go version unknown'}) */")


def _print_layout(lay: Layout) -> None:
    """pahole-like: one line a field with its offset and size."""
    click.echo(f"struct {lay.name} {{\t/* size: {lay.size}, align: {lay.align}, "
               f"source: typeinfo @0x{lay.address:x} */")
    width = max([len(f.name) for f in lay.fields] + [8])
    for f in lay.fields:
        emb = " (embedded)" if f.embedded else ""
        click.echo(f"\t{f.name:<{width}} {f.type + emb:<40} /* {f.offset:6d} {f.size:6d} */")
    click.echo("};")


@click.command("elf")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--symbols", "names", default="", help="Comma-separated symbol names.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@one_line_errors("resolver")
def elf_command(path, names, as_json):
    """File offsets of symbols of any ELF, and OpenSSL's version when it is OpenSSL.

    \b
    Examples:
      resolver elf /usr/lib/x86_64-linux-gnu/libssl.so.3 --symbols SSL_write,SSL_read
      resolver elf ./static-app --symbols SSL_write --json
    """
    img = ElfFile(path)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    out = {"path": path, "arch": img.arch, "symbols": resolve_symbols(img, wanted),
           "openssl": openssl_version(img)}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"path     {path}  ({img.arch})")
    if out["openssl"]:
        click.echo(f"openssl  {out['openssl']['version']}  ({out['openssl']['text']}; "
                   f"{out['openssl']['source']})")
    for n, s in out["symbols"].items():
        if s is None:
            click.echo(f"  {n}: absent")
        else:
            click.echo(f"  {n}: address {_hex(s['address'])} file offset {_hex(s['file_offset'])}"
                       f" size {s['size']} ({s['table']})")


if __name__ == "__main__":      # python -m resolver.golang.cli go|elf ...
    group = click.Group(commands={"go": go_command, "elf": elf_command})
    group()
