"""`dbhive build`: one input (package, vmlinux, BTF) -> one per-kernel DB in the hive.

    input --archive--> vmlinux / raw BTF --identity--> key --btf|dwarf--> TypeGraph --store--> DB
"""
from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Callable, Optional

from . import __version__, hive as hivemod, model as M, output, schema, store
from .btf.reader import MAX_BTF_BYTES
from .errors import BuildError, DbhiveError


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
               jobs: Optional[int], max_btf_bytes: int = MAX_BTF_BYTES):
    from . import btf
    if source == "btf" or is_raw_btf:
        return btf.read_btf(read_btf_bytes(kernel_path, is_raw_btf, max_btf_bytes),
                            kernel_path if is_raw_btf else kernel_path + ":.BTF")
    from . import dwarf
    return dwarf.read_dwarf(kernel_path, progress=progress, jobs=jobs)


def build(input_path: str, hive: Optional[str] = None, out: Optional[str] = None,
          distro: Optional[str] = None, source: Optional[str] = None, progress: bool = False,
          jobs: Optional[int] = None, workdir: Optional[str] = None, force: bool = False,
          arch: Optional[str] = None, max_btf_bytes: int = MAX_BTF_BYTES,
          max_member_bytes: Optional[int] = None, with_btf: bool = False,
          btf_dir: Optional[str] = None, modules=None, source_sha256: Optional[str] = None,
          on_identity: Optional[Callable[[dict, str], None]] = None,
          with_header: bool = False) -> BuildResult:
    """Build the DB of the kernel in `input_path`; returns where it went and its meta.
    Nothing is left behind on error (temp extraction dir and temp DB are removed).

    `force`: replace a DB even when the new one has no types or fewer than half the types
    of the DB it replaces (both usually mean damaged input).  `arch`: the kernel's arch
    when the input cannot tell (raw BTF outside a btfhub `<arch>/` directory).
    `with_btf` / `btf_dir`: also write BTF for the kernel (dbhive.btf.make.build_btf_files).
    `with_header`: also write its C header (dbhive/cheader.py): in the hive
    <arch>/head/<distro>/<release>.h, or <db>.h beside a single DB.
    `modules`: "all" or a list of module names of the package to add (dbhive/modules).
    `source_sha256`: the input's sha256 when the caller has it already (batch).
    `jobs`: processes for the DWARF, and whether the DB is written by a thread of its own
    (default: cores; 1: all in this process and thread).
    `on_identity(meta, kernel_path)`: called once the kernel is identified, before its types
    are read; an exception it raises stops the build (batch: identical kernels built once)."""
    from . import identity
    if not os.path.exists(input_path):
        raise BuildError(f"{input_path}: no such file")
    if out:
        output.check_destination(out, must_exist_dir=True)
    tmp_parent = workdir or (os.path.dirname(os.path.abspath(out)) if out else
                             tempfile.gettempdir())
    output.sweep_stale_temps(tmp_parent)
    tmp = output.temp_dir(tmp_parent)
    sha256 = None if source_sha256 else identity.Sha256Later(input_path)
    try:
        ex, ident = identity.identify(input_path, tmp, progress=progress,
                                      max_member_bytes=max_member_bytes)
        is_raw_btf = ident.source == "raw-btf"
        src = "btf" if is_raw_btf else choose_source(ident.has_debug_info, ident.has_btf,
                                                     source, input_path)
        meta = ident.as_meta()
        if arch:
            meta["arch"] = arch
        if not meta["arch"] and not out:       # the hive files DBs by arch
            raise BuildError(f"{input_path}: cannot tell which architecture this kernel is "
                             f"for (a raw BTF file outside a btfhub <arch>/ directory): pass "
                             f"--arch, e.g. --arch x86_64")
        if on_identity:
            on_identity(dict(meta), ex.path)
        extracted = None
        if modules is not None:          # first: a module name not in the package fails fast
            if ex.kind not in ("rpm", "deb"):
                raise BuildError(f"{input_path}: --modules needs a package (RPM, .deb) that "
                                 f"holds the modules; for .ko files use `kobuild`")
            from .modules import extract_package_modules
            extracted = extract_package_modules(input_path, tmp,
                                                None if modules == "all" else modules, progress)
        with identity.about_member(ex, input_path):
            graph = read_types(ex.path, is_raw_btf, src, progress, jobs, max_btf_bytes)
        graph.ptr_size = M.pointer_size(meta["arch"])
        kernel_graph = graph                # the BTF written is the kernel's, without modules
        if extracted is not None:
            from .modules import add_package_modules
            graph, mod_meta = add_package_modules(graph, extracted, ident.release, jobs,
                                                  progress)
            meta.update(mod_meta)
        meta.update({
            "distro": distro or hivemod.DEFAULT_DISTRO,
            "package_name": ex.package_name,
            "package_version": ex.package_version,
            "source_file": os.path.basename(input_path),
            "source_member": ex.member or "",
            "source_kind": ex.kind,
            "type_source": src,
            "builder_version": __version__,
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        })
        # a raw BTF input is the file identity hashed already; else the hash being made
        # meanwhile is waited for as late as can be (write_db's late_meta)
        late_meta = {}
        if ex.kind == "raw-btf" and not ex.temporary and ident.btf_sha256 and not source_sha256:
            meta["source_sha256"] = ident.btf_sha256
        elif source_sha256:
            meta["source_sha256"] = source_sha256
        else:
            late_meta["source_sha256"] = sha256
        hive = None if out else (hive or hivemod.default_hive())
        dest = out or hivemod.db_path(hive, meta["arch"], meta["distro"], meta["release"],
                                      meta["flavour"])
        guard_replacement(graph, dest, input_path, force)
        files: list = []
        if hive or with_btf or btf_dir is not None:     # else no BTF is kept beside the DB
            from .btf.make import build_btf_files
            with identity.about_member(ex, input_path):
                files, btf_meta = build_btf_files(kernel_graph, meta, ex.path, is_raw_btf,
                                                  ident.has_btf, hive, dest, with_btf,
                                                  btf_dir, max_btf_bytes)
            meta.update(btf_meta)
        if with_header:                 # made before anything is written: an error leaves none
            from . import cheader
            meta.update((k, value()) for k, value in late_meta.items())   # the banner says it
            late_meta = {}
            head_dest = header_path(hive, dest, meta)
            output.check_destination(head_dest)
            files.append((head_dest, cheader.render(kernel_graph, cheader.banner(meta),
                                                    input_path).encode()))
        meta = store.write_db(graph, meta, dest, must_exist_dir=bool(out),
                              parallel=jobs is None or jobs > 1, late_meta=late_meta)
        if files:                         # BTF and header files beside the DB
            from .btf.make import write_files
            write_files(files)
    finally:
        if sha256 is not None:
            sha256.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return BuildResult(dest, meta)


def header_path(hive: Optional[str], db_dest: str, meta: dict) -> str:
    """Where `--with-header` puts a kernel's C header: in the hive's head/, else beside the
    DB file (<db>.h)."""
    if hive:
        return hivemod.head_path(hive, meta["arch"], meta["distro"], meta["release"],
                                 meta.get("flavour"))
    return (db_dest[:-3] if db_dest.endswith(".db") else db_dest) + ".h"


def guard_replacement(graph, dest: str, input_path: str, force: bool) -> None:
    """Refuse (unless `force`) a result with no types, or one that would replace a DB of
    the same kernel holding more than twice as many types: both mean damaged input more
    often than a smaller kernel."""
    if force:
        return
    n = len(graph.types) - 1            # id 0 is void
    if n <= 0:
        raise BuildError(f"{input_path}: holds no types (damaged or empty type information); "
                         f"nothing was written (--force writes it anyway)")
    if os.path.isfile(dest):
        try:
            old = int(schema.read_meta(dest).get("types") or 0) - 1
        except (DbhiveError, ValueError):
            return                      # not a readable DB: nothing worth protecting
        if old > 2 * n:
            raise BuildError(f"{input_path}: has {n} types, fewer than half of the {old} in "
                             f"the DB it would replace ({dest}); nothing was written "
                             f"(--force replaces it anyway)")


def read_btf_bytes(kernel_path: str, is_raw_btf: bool, max_bytes: int = MAX_BTF_BYTES) -> bytes:
    """The raw BTF of a kernel (as many bytes as its header declares): the file itself, or
    an ELF's .BTF section."""
    from .btf import read_btf_file
    from .elf import elf_section_bytes
    if is_raw_btf:
        return read_btf_file(kernel_path, max_bytes)
    return elf_section_bytes(kernel_path, ".BTF", max_bytes)

