"""The surftrace/pylcc "lbc" protocol's commands, answered through the resolver's query
layer (`Resolver.surftrace_*`), so the server and `resolver offset` always agree and remote
answers equal what the client reads from the DB's own tables in local mode.

    struct: {"struct": "struct task_struct"} -> {"name", "members", "size", "cell": [...]}
            (a name with '%' is a LIKE pattern: a list of {"name", "members", "size"}, 10 at most)
    func:   {"func": "do_filp_open"[, "ret": T][, "arg": T]} -> [{"func", "args", "ret", "line", "file"}]
    type:   {"type": "unsigned int"} -> {"name", "type", "size"}; the client sends "_" for any pointer
    btf:    {} -> {"log": "ok.", "btf": base64 of the kernel's raw BTF} when the hive has it
"""
from __future__ import annotations

import base64
import os
from typing import Optional

from dbhive.errors import InputError
from dbhive.hive import btf_path, hive_of_db

from .api import Resolver

STRUCT_LIKE_LIMIT = 10
FUNC_LIMIT = 20
FUNC_FILTER_LIMIT = 100
BTF_MAGICS = (b"\x9f\xeb", b"\xeb\x9f")


class BadRequest(InputError, ValueError):
    """A request the protocol does not allow (the reply's log says why)."""


def struct(r: Resolver, name: str):
    if "%" in name:
        return r.surftrace_structs_like(name, STRUCT_LIKE_LIMIT)
    return r.surftrace_struct(name)


def type_(r: Resolver, name: str):
    if name == "_" or "*" in name:          # the client asks for every pointer as "_"
        name = "void *"
    return r.surftrace_type(name)


def func(r: Resolver, name: str, ret: Optional[str], arg: Optional[str]):
    if ret is not None or arg is not None:
        pattern = name or "%"
        if "%" not in pattern:
            raise BadRequest("with 'ret' or 'arg', 'func' must be a pattern with '%'")
        return r.surftrace_funcs(pattern, ret=ret, arg=arg, limit=FUNC_FILTER_LIMIT)
    return r.surftrace_funcs(name, limit=FUNC_LIMIT)


def btf_file(r: Resolver, hive: Optional[str]) -> Optional[str]:
    """Where the build kept the raw BTF of `r`'s kernel (`dbhive.hive.btf_path`:
    <hive>/<arch>/btf/<release>.btf), in the hive asked for or the DB's own; None if none."""
    meta = r.db.meta
    release, arch = meta.get("release") or "", meta.get("arch") or ""
    for h in dict.fromkeys(x for x in (hive, hive_of_db(r.db.path)) if x):
        p = btf_path(h, arch, release, meta.get("flavour"))
        if os.path.isfile(p):
            return p
    return None


def btf(r: Resolver, hive: Optional[str], max_bytes: int) -> tuple:
    """(log, base64 BTF or None)."""
    path = btf_file(r, hive)
    if path is None:
        return (f"btf not available for {r.db.meta.get('release')} "
                f"({r.db.meta.get('type_source')} DB)", None)
    size = os.path.getsize(path)
    if size > max_bytes:
        return f"btf of {r.db.meta.get('release')} is {size} bytes, over this server's cap", None
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if data[:2] not in BTF_MAGICS:
        return f"btf of {r.db.meta.get('release')} is damaged on the server", None
    return "ok.", base64.b64encode(data).decode()
