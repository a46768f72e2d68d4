"""A kernel's BTF as a resolver source, read into memory without building a DB.

Used where the kernel's own BTF is at hand (the tracer on a kernel that has it): the same
reader `dbhive build` uses turns the BTF into the shared type model, and `GraphSource`
answers from it exactly as the DB built from that BTF would.
"""
from __future__ import annotations

import os
from typing import Optional

from .errors import NoKernelDB
from .kernel import GraphSource

SYS_BTF = "/sys/kernel/btf/vmlinux"


def btf_source(path: str = SYS_BTF, meta: Optional[dict] = None) -> GraphSource:
    """Raw BTF, or an ELF file's .BTF section, as a GraphSource.  NoKernelDB (one line)
    when the file is missing or is not BTF."""
    from dbhive.btf import read_btf
    from dbhive.build import read_btf_bytes
    from dbhive.elf import is_elf
    from dbhive.errors import InputError
    if not os.path.exists(path):
        raise NoKernelDB(f"no such BTF file: {path}")
    try:
        graph = read_btf(read_btf_bytes(path, is_raw_btf=not is_elf(path)), path)
    except InputError as e:
        raise NoKernelDB(str(e)) from None
    if meta is None:
        meta = _meta_for(path)
    meta = {**meta, "type_source": "btf", "source_file": path}
    return GraphSource(graph, path, meta, label="btf")


def _meta_for(path: str) -> dict:
    """The kernel identity of a BTF file: the running kernel's for /sys/kernel/btf/vmlinux,
    the ELF's own for a vmlinux, else nothing beyond the file name."""
    if os.path.realpath(path) == SYS_BTF:
        from .choose import running_identity
        ident = running_identity()
        return {"release": ident.release, "arch": ident.arch, "build_id": ident.build_id or ""}
    from dbhive.elf import is_elf
    if is_elf(path):
        try:
            from dbhive.identity import kernel_identity
            ident = kernel_identity(path)
            return {"release": ident.release, "arch": ident.arch, "build_id": ident.build_id,
                    "flavour": ident.flavour}
        except Exception:       # an ELF with .BTF that is not a kernel: no identity to report
            return {}
    return {}
