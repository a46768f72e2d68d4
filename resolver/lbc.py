"""The surftrace/pylcc "lbc" protocol's commands, answered through the resolver's query
layer (`Resolver.surftrace_*`), so the server and `resolver offset` always agree and remote
answers equal what the client reads from the DB's own tables in local mode.

    struct: {"struct": "struct task_struct"} -> {"name", "members", "size", "cell": [...]}
            (a name with '%' is a LIKE pattern: a list of {"name", "members", "size"}, 10 at most)
    func:   {"func": "do_filp_open"[, "ret": T][, "arg": T]} -> [{"func", "args", "ret", "line", "file"}]
    type:   {"type": "unsigned int"} -> {"name", "type", "size"}; the client sends "_" for any pointer
    btf:    {} -> {"log": "ok.", "btf": base64 of the kernel's raw BTF}: the file the hive
            keeps (the kernel's own BTF, or BTF `dbhive build --with-btf` emitted); for a
            DWARF-built DB without one, BTF emitted from the DB's types (cached)
"""
from __future__ import annotations

import base64
import collections
import os
import threading
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
    """Where the hive keeps the raw BTF of `r`'s kernel: the file the DB's meta names
    (`btf_file`, relative to its hive), else `dbhive.hive.btf_path` (<hive>/<arch>/btf/
    <release>.btf), in the hive asked for or the DB's own; None if none."""
    meta = r.db.meta
    release, arch = meta.get("release") or "", meta.get("arch") or ""
    for h in dict.fromkeys(x for x in (hive, hive_of_db(r.db.path)) if x):
        named = meta.get("btf_file")
        if named and not os.path.isabs(named) and ".." not in named.split(os.sep):
            p = os.path.join(h, named)
            if os.path.isfile(p):
                return p
        p = btf_path(h, arch, release, meta.get("flavour"))
        if os.path.isfile(p):
            return p
    return None


# BTF emitted on demand for DWARF-built DBs: (path, size, mtime) -> bytes, a few kept
_EMITTED: collections.OrderedDict = collections.OrderedDict()
_EMITTED_KEEP = 4
_EMITTED_LOCK = threading.Lock()


def emitted_btf(db_path: str) -> bytes:
    """The full BTF of a DB's types (dbhive.btf.emit), made once per DB file version."""
    st = os.stat(db_path)
    key = (os.path.abspath(db_path), st.st_size, st.st_mtime_ns)
    with _EMITTED_LOCK:
        data = _EMITTED.get(key)
        if data is not None:
            _EMITTED.move_to_end(key)
            return data
    from dbhive.btf.make import Kernel, full_btf
    from dbhive.schema import read_meta
    data = full_btf(Kernel(read_meta(db_path), db=db_path)).emitted.data
    with _EMITTED_LOCK:
        _EMITTED[key] = data
        while len(_EMITTED) > _EMITTED_KEEP:
            _EMITTED.popitem(last=False)
    return data


def btf(r: Resolver, hive: Optional[str], max_bytes: int) -> tuple:
    """(log, base64 BTF or None)."""
    release = r.db.meta.get("release")
    path = btf_file(r, hive)
    if path is None:
        if r.db.meta.get("type_source") != "dwarf":
            return (f"btf not available for {release} "
                    f"({r.db.meta.get('type_source')} DB)", None)
        data = emitted_btf(r.db.path)
    else:
        size = os.path.getsize(path)
        if size > max_bytes:
            return f"btf of {release} is {size} bytes, over this server's cap", None
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        return f"btf of {release} is {len(data)} bytes, over this server's cap", None
    if data[:2] not in BTF_MAGICS:
        return f"btf of {release} is damaged on the server", None
    return "ok.", base64.b64encode(data).decode()
