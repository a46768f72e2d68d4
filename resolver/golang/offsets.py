"""Struct member offsets the tracer reads from Go memory, with where each answer came from.

Sources, in order of precedence:
  dwarf      the binary's own DWARF
  typeinfo   the binary's own runtime type descriptors (typeinfo.py): stripped binaries too
  table      the table scripts/gen_go_offsets.py generates from real toolchains
             (`table:<toolchain>` or `table:<module>@<version>/<toolchain>`), matched on the Go
             minor version (and, for third-party modules, on the module version the binary's
             build info names)
  unknown    none of them answers; `reason` says why.  Nothing is ever defaulted.
Every source that answers is consulted: the entry's `offset` is the first one's, `checked`
lists the others that agree, and `conflicts` ({source: offset}) those that do not — a
disagreement is reported (the report also warns), never silently resolved.  When the
descriptors do not answer, `typeinfo` says why (no descriptor for the struct, ...).
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Dict, Iterable, List, Optional, Tuple

from dbhive.errors import BadPath

from .buildinfo import parse_version

GRPC = "google.golang.org/grpc"
XNET = "golang.org/x/net"
THIRD_PARTY = (GRPC, XNET)
_T = GRPC + "/internal/transport"

STANDARD_OFFSETS: List[str] = [
    "runtime.g.goid",
    "crypto/tls.Conn.conn",
    "internal/poll.FD.Sysfd",
    "net/http.http2serverConn.conn",
    "net/http.http2ClientConn.tconn",
    "net/http.http2clientConnReadLoop.cc",
    "net/http.http2MetaHeadersFrame.Fields",
    "net/http.http2ClientConn.nextStreamID",
    "net/http.http2FrameHeader.StreamID",
    _T + ".http2Client.conn",
    _T + ".http2Server.conn",
    _T + ".loopyWriter.framer",
    _T + ".loopyWriter.side",
    _T + ".framer.writer",
    _T + ".bufWriter.conn",
    XNET + "/http2.Framer.w",
    XNET + "/http2.serverConn.conn",
    XNET + "/http2.ClientConn.tconn",
    XNET + "/http2.clientConnReadLoop.cc",
    XNET + "/http2.MetaHeadersFrame.Fields",
    XNET + "/http2.ClientConn.nextStreamID",
    XNET + "/http2.FrameHeader.StreamID",
    # Go 1.27 moved net/http's bundled HTTP/2 into its own internal package.
    "net/http/internal/http2.serverConn.conn",
    "net/http/internal/http2.ClientConn.tconn",
    "net/http/internal/http2.clientConnReadLoop.cc",
    "net/http/internal/http2.MetaHeadersFrame.Fields",
    "net/http/internal/http2.ClientConn.nextStreamID",
    "net/http/internal/http2.FrameHeader.StreamID",
]


def split_key(key: str) -> Tuple[str, str]:
    """'net/http.http2ClientConn.tconn' -> ('net/http.http2ClientConn', 'tconn')."""
    struct_name, dot, field = key.rpartition(".")
    if not dot or "." not in struct_name.rsplit("/", 1)[-1]:
        raise BadPath(f"offset key {key!r} is not <package>.<Struct>.<field>")
    return struct_name, field


def module_of(struct_name: str) -> Optional[str]:
    """The third-party module a struct comes from (None for the standard library)."""
    for mod in THIRD_PARTY:
        if struct_name == mod or struct_name.startswith(mod + "/") or struct_name.startswith(mod + "."):
            return mod
    return None


TABLE_RESOURCE = ("resolver.golang", "data/offsets.json")     # package data


@lru_cache(maxsize=1)
def load_table() -> dict:
    """The generated table (package data, so a wheel install carries it)."""
    from importlib.resources import files
    pkg, name = TABLE_RESOURCE
    return json.loads(files(pkg).joinpath(name).read_text())


def _minor(version: Optional[str]) -> Optional[Tuple[int, int]]:
    v = parse_version(version) if version else None
    return None if v is None else (v[0], v[1])


def _from_table(table: Optional[dict], key: str, module: Optional[str], go_version: Optional[str],
                deps: Dict[str, str]) -> dict:
    if table is None:
        return {"offset": None, "source": "unknown", "reason": "offset table missing"}
    want = _minor(go_version)
    if want is None:
        return {"offset": None, "source": "unknown", "reason": "Go version unknown"}
    if module is None:
        entries = table.get("std", {})
        label = ""
    else:
        mv = deps.get(module)
        if not mv:
            return {"offset": None, "source": "unknown",
                    "reason": f"{module} version not in the build info"}
        entries = table.get("modules", {}).get(f"{module}@{mv}")
        if entries is None:
            return {"offset": None, "source": "unknown", "reason": f"no table for {module}@{mv}"}
        label = f"{module}@{mv}/"
    # the binary's exact toolchain when the table has it, else the newest patch of its minor
    exact = parse_version(go_version)
    ranked = sorted(((parse_version(t) == exact, parse_version(t) or (0, 0, 0), t)
                     for t in entries if _minor(t) == want), reverse=True)
    for _same, _v, toolchain in ranked:
        fields = entries[toolchain]
        if key in fields:
            return {"offset": fields[key], "source": f"table:{label}{toolchain}"}
    return {"offset": None, "source": "unknown",
            "reason": f"not in the table for go{want[0]}.{want[1]}"}


def _from_types(types, types_reason: Optional[str], struct_name: str, field: str,
                cache: dict) -> Tuple[Optional[int], str]:
    """(offset, "") from the type descriptors, or (None, why not)."""
    if types is None:
        return None, types_reason or "no type descriptors"
    if struct_name not in cache:
        cache[struct_name] = types.find_struct(struct_name)
    layout, why = cache[struct_name]
    if layout is None:
        return None, why
    offsets = layout.offsets()
    if field not in offsets:
        return None, f"{struct_name} has no field {field} in its type descriptor"
    return offsets[field], ""


def resolve_offsets(keys: Iterable[str], dwarf, go_version: Optional[str],
                    deps: Dict[str, str], types=None,
                    types_reason: Optional[str] = None) -> Dict[str, dict]:
    """{key: {"offset", "source"[, "reason", "checked", "conflicts", "typeinfo"]}} for each
    key.  `types` is a typeinfo.Descriptors (None, with `types_reason`, when unavailable)."""
    table = load_table()
    keys = list(keys)
    if dwarf is not None:
        dwarf.prefetch(split_key(k)[0] for k in keys)
    layouts: dict = {}
    out: Dict[str, dict] = {}
    for key in keys:
        struct_name, field = split_key(key)
        answers: List[Tuple[str, int]] = []
        if dwarf is not None:
            members = dwarf.struct_members(struct_name)
            if members and field in members:
                answers.append(("dwarf", members[field]))
        off, why_not_types = _from_types(types, types_reason, struct_name, field, layouts)
        if off is not None:
            answers.append(("typeinfo", off))
        tab = _from_table(table, key, module_of(struct_name), go_version, deps)
        if tab["offset"] is not None:
            answers.append((tab["source"], tab["offset"]))
        if not answers:
            entry = tab
        else:
            source, value = answers[0]
            entry = {"offset": value, "source": source}
            checked = [s for s, v in answers[1:] if v == value]
            conflicts = {s: v for s, v in answers[1:] if v != value}
            if checked:
                entry["checked"] = checked
            if conflicts:
                entry["conflicts"] = conflicts
        if off is None:
            entry["typeinfo"] = why_not_types
        out[key] = entry
    return out
