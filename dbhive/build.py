"""`dbhive build`: one input (package, vmlinux, BTF) -> one per-kernel DB in the hive.

    input --archive--> vmlinux / raw BTF --identity--> key --btf|dwarf--> TypeGraph --store--> DB
"""
from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass
from typing import Optional

from . import __version__, hive as hivemod, store
from .errors import BuildError


@dataclass
class BuildResult:
    db: str
    meta: dict


def choose_source(has_dwarf: bool, has_btf: bool, forced: Optional[str], path: str) -> str:
    """DWARF when present (the complete truth), else BTF; `forced` overrides."""
    if forced == "dwarf":
        if not has_dwarf:
            raise BuildError(f"{path}: --source dwarf asked, but it has no DWARF (.debug_info)")
        return "dwarf"
    if forced == "btf":
        if not has_btf:
            raise BuildError(f"{path}: --source btf asked, but it has no BTF")
        return "btf"
    if has_dwarf:
        return "dwarf"
    if has_btf:
        return "btf"
    raise BuildError(f"{path}: no type information (neither .debug_info nor .BTF)")


def read_types(kernel_path: str, is_raw_btf: bool, source: str, progress: bool,
               jobs: Optional[int]):
    from . import btf
    if source == "btf" or is_raw_btf:
        return btf.read_btf(read_btf_bytes(kernel_path, is_raw_btf),
                            kernel_path if is_raw_btf else kernel_path + ":.BTF")
    from . import dwarf
    return dwarf.read_dwarf(kernel_path, progress=progress, jobs=jobs)


def build(input_path: str, hive: Optional[str] = None, out: Optional[str] = None,
          distro: Optional[str] = None, source: Optional[str] = None, progress: bool = False,
          jobs: Optional[int] = None, workdir: Optional[str] = None) -> BuildResult:
    """Build the DB of the kernel in `input_path`; returns where it went and its meta.
    Nothing is left behind on error (temp extraction dir and temp DB are removed)."""
    from . import identity
    if not os.path.exists(input_path):
        raise BuildError(f"{input_path}: no such file")
    tmp_parent = workdir or (os.path.dirname(os.path.abspath(out)) if out else None)
    with tempfile.TemporaryDirectory(prefix="dbhive-", dir=tmp_parent) as tmp:
        ex, ident = identity.identify(input_path, tmp, progress=progress)
        is_raw_btf = ident.source == "raw-btf"
        src = "btf" if is_raw_btf else choose_source(ident.has_debug_info, ident.has_btf,
                                                     source, input_path)
        graph = read_types(ex.path, is_raw_btf, src, progress, jobs)
        meta = ident.as_meta()
        meta.update({
            "distro": distro or hivemod.DEFAULT_DISTRO,
            "package_name": ex.package_name,
            "package_version": ex.package_version,
            "source_file": os.path.basename(input_path),
            "source_member": ex.member or "",
            "source_sha256": identity.file_sha256(input_path),
            "source_kind": ex.kind,
            "type_source": src,
            "builder_version": __version__,
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })
        hive = None if out else (hive or hivemod.default_hive())
        dest = out or hivemod.db_path(hive, meta["arch"], meta["distro"], meta["release"],
                                      meta["flavour"])
        meta = store.write_db(graph, meta, dest)
        if hive and (is_raw_btf or ident.has_btf):
            keep_btf(ex.path, is_raw_btf,
                     hivemod.btf_path(hive, meta["arch"], meta["release"], meta["flavour"]))
    return BuildResult(dest, meta)


def read_btf_bytes(kernel_path: str, is_raw_btf: bool) -> bytes:
    """The raw BTF of a kernel: the file itself, or an ELF's .BTF section."""
    from .elf import elf_section_bytes, open_regular
    if is_raw_btf:
        with open_regular(kernel_path, "BTF file") as fh:
            return fh.read()
    return elf_section_bytes(kernel_path, ".BTF")


def keep_btf(kernel_path: str, is_raw_btf: bool, dest: str) -> None:
    """Keep the kernel's raw BTF beside its DB (the lbc `btf` command serves it)."""
    data = read_btf_bytes(kernel_path, is_raw_btf)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".btf", dir=os.path.dirname(dest))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise
