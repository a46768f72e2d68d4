"""`dbhive btf`'s work, usable without the command line: which kernels an input names, full
or minimal BTF for each, and writing the results (files, a directory tree, one .tar.xz).

    kernels = resolve_inputs(["info-6.1.db"])                  # or a release, --all, a vmlinux
    outputs = [full_btf(k) for k in kernels]                     # or minimal_btf(k, objects)
    write_outputs(outputs, out="vmlinux-6.1.btf")

Everything is made before anything is written, and written through temp files renamed into
place, so an error anywhere leaves nothing behind.
"""
from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from .. import __version__
from .. import hive as hivemod
from .. import model as M
from .. import schema as S
from ..elf import file_starts_with
from ..errors import DbhiveError, NoKernelDB, OutputError
from . import emit as EM
from . import minimal as MIN
from .core import GraphView, TypeView

SQLITE_MAGIC = b"SQLite format 3\0"
# `uname -m` spellings of big-endian machines; everything else is written little-endian
BIG_ENDIAN_ARCHES = ("s390x", "s390", "ppc64", "ppc", "sparc64", "sparc", "mips", "mips64",
                     "aarch64_be", "armeb", "parisc", "parisc64", "m68k")


@dataclass
class Kernel:
    """One kernel to write BTF for: a DB (read on demand) or a graph already in memory."""
    meta: dict
    db: Optional[str] = None
    graph: Optional[M.TypeGraph] = None
    source: str = ""                     # what the user named

    @property
    def release(self) -> str:
        return self.meta.get("release") or "unknown"

    @property
    def arch(self) -> str:
        return self.meta.get("arch") or ""

    def load_graph(self) -> M.TypeGraph:
        if self.graph is None:
            from ..store import load_graph
            self.graph = load_graph(self.db)
        return self.graph

    def view(self) -> TypeView:
        if self.graph is not None:
            return GraphView(self.graph)
        from .dbview import DbView
        return DbView(self.db)

    def rel_path(self, ext: str = ".btf") -> str:
        """<distro>/<arch>/<release>.btf: btfhub's tree without the distro version."""
        return os.path.join(hivemod.safe_component(self.meta.get("distro") or "unknown",
                                                   "distro"),
                            hivemod.safe_component(self.arch or "unknown", "arch"),
                            hivemod.kernel_key(self.release, self.meta.get("flavour")) + ext)


@dataclass
class Output:
    kernel: Kernel
    emitted: EM.Emitted
    relocations: dict = field(default_factory=dict)    # minimal BTF: counts and misses
    seconds: float = 0.0

    def summary(self) -> dict:
        d = {"release": self.kernel.release, "arch": self.kernel.arch,
             "input": self.kernel.source, "db": self.kernel.db}
        d.update(self.emitted.summary())
        if self.relocations:
            d["relocations"] = self.relocations
        d["seconds"] = round(self.seconds, 3)
        return d


def is_db(path: str) -> bool:
    return file_starts_with(path, SQLITE_MAGIC)


def byte_order(arch: str, asked: str = "target") -> str:
    if asked in ("little", "big"):
        return asked
    return "big" if arch in BIG_ENDIAN_ARCHES else "little"


def resolve_inputs(inputs: list, hive: Optional[str] = None, all_kernels: bool = False,
                   source: Optional[str] = None, progress: bool = False,
                   jobs: Optional[int] = None) -> list:
    """The kernels named: DB files, releases in the hive, or (read now) packages, vmlinux
    files and raw BTF; with `all_kernels` every DB of the hive."""
    kernels = []
    if all_kernels:
        h = hive or hivemod.default_hive()
        for entry in hivemod.iter_dbs(h):
            kernels.append(_db_kernel(entry.path, entry.path))
        if not kernels:
            raise NoKernelDB(f"no kernel DBs in {h}")
    for name in inputs:
        if os.path.exists(name):
            if os.path.isfile(name) and is_db(name):
                kernels.append(_db_kernel(name, name))
            else:
                kernels.append(_read_input(name, source, progress, jobs))
        else:
            kernels.extend(_in_hive(name, hive or hivemod.default_hive()))
    return kernels


def _db_kernel(path: str, named: str) -> Kernel:
    conn, meta = S.open_db(path)            # checks the schema version, one line if wrong
    conn.close()
    return Kernel(meta, db=path, source=named)


def _in_hive(release: str, hive: str) -> list:
    found = []
    for entry in hivemod.iter_dbs(hive):
        try:
            meta = S.read_meta(entry.path)
        except DbhiveError:               # a foreign or damaged file: not the one asked for
            continue
        if release in (meta.get("release"),
                       hivemod.kernel_key(meta.get("release") or "", meta.get("flavour"))):
            found.append(entry.path)
    if not found:
        raise NoKernelDB(f"{release}: no such file, and no DB of that release in {hive}")
    if len(found) > 1:
        raise NoKernelDB(f"{release}: {len(found)} DBs of that release in {hive} "
                         f"({', '.join(found)}); name the DB file")
    return [_db_kernel(found[0], release)]


def _read_input(path: str, source: Optional[str], progress: bool, jobs: Optional[int]) -> Kernel:
    """A package, vmlinux or raw BTF, read the way `dbhive build` reads it."""
    from .. import identity, output
    from ..build import choose_source, read_types
    parent = tempfile.gettempdir()
    output.sweep_stale_temps(parent)
    tmp = output.temp_dir(parent)
    try:
        ex, ident = identity.identify(path, tmp, progress=progress)
        raw = ident.source == "raw-btf"
        src = "btf" if raw else choose_source(ident.has_debug_info, ident.has_btf, source, path)
        with identity.about_member(ex, path):
            graph = read_types(ex.path, raw, src, progress, jobs)
        meta = ident.as_meta()
        graph.ptr_size = M.pointer_size(meta.get("arch") or "")
        meta.update({"type_source": src, "source_file": os.path.basename(path),
                     "distro": hivemod.DEFAULT_DISTRO})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Kernel(meta, graph=graph, source=path)


def full_btf(k: Kernel, profile="current", byteorder: str = "target") -> Output:
    t0 = time.perf_counter()
    out = EM.emit(k.load_graph(), profile, byte_order(k.arch, byteorder))
    return Output(k, out, seconds=time.perf_counter() - t0)


def minimal_btf(k: Kernel, objects: list, profile="current",
                byteorder: str = "target") -> Output:
    t0 = time.perf_counter()
    view = k.view()
    try:
        g, sel = MIN.minimal_graph(objects, view)
    finally:
        close = getattr(view, "close", None)
        if close:
            close()
    out = EM.emit(g, profile, byte_order(k.arch, byteorder))
    missed = [describe(r) for r in sel.relocated
              if r.target is None and r.relo.kind != 6]
    rel = {"total": len(sel.relocated), "satisfied": len(sel.relocated) - len(missed),
           "unsatisfied": missed}
    return Output(k, out, rel, time.perf_counter() - t0)


def describe(r) -> str:
    """`core_task.bpf.o: field_exists struct task_struct___old 0:0` for a relocation."""
    g = r.obj.graph
    root = r.local.root if r.local else 0
    return f"{os.path.basename(r.obj.path)}: {r.relo.kind_name} {g.type_name(root)} " \
           f"{r.relo.access}"


# ---- writing ------------------------------------------------------------------------------

def write_outputs(outputs: list, out: Optional[str] = None, archive: Optional[str] = None,
                  tree: bool = False) -> list:
    """Write each output's bytes: to `out` (one file; a directory when `tree`, laid out by
    Kernel.rel_path) and/or into `archive` (one .tar.xz).  Returns the paths written.
    All or nothing: files are staged in temp names and renamed at the end."""
    written = []
    staged = []                      # (temp path, final path)
    try:
        if out is not None:
            if tree:
                if os.path.exists(out) and not os.path.isdir(out):
                    raise OutputError(f"{out}: exists and is not a directory (with --all, "
                                      f"-o names a directory)")
                targets = [(o, os.path.join(out, o.kernel.rel_path())) for o in outputs]
                _no_collisions([t for _, t in targets])
            else:
                if len(outputs) != 1:
                    raise OutputError(f"{len(outputs)} kernels but one output file; use "
                                      f"-o DIR/ with --all, or --archive")
                if os.path.isdir(out):
                    raise OutputError(f"{out}: is a directory (name the output file)")
                targets = [(outputs[0], out)]
            for o, dest in targets:
                staged.append((_stage(o.emitted.data, dest), dest))
        if archive is not None:
            staged.append((_stage(_tar_xz(outputs), archive), archive))
        for tmp, dest in staged:
            os.replace(tmp, dest)
            written.append(dest)
        staged = []
    finally:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return written


def _no_collisions(paths: list) -> None:
    seen = set()
    for p in paths:
        if p in seen:
            raise OutputError(f"two kernels of the hive would be written to {p} (same "
                              f"release, arch and distro in their DBs' meta)")
        seen.add(p)


def _stage(data: bytes, dest: str) -> str:
    """`data` in a temp file beside `dest` (dbhive.output's names, swept if we die)."""
    from .. import output
    d = output.check_destination(dest)
    output.sweep_stale_temps(d)
    tmp = output.temp_name(d, ".btf")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    return tmp


def _tar_xz(outputs: list) -> bytes:
    """One .tar.xz of every output (one compression stream over all, as fleets ship them;
    a single kernel is stored as `<release>.btf`, btfhub's shape)."""
    if len(outputs) > 1:
        _no_collisions([o.kernel.rel_path() for o in outputs])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for o in outputs:
            name = (hivemod.kernel_key(o.kernel.release, o.kernel.meta.get("flavour")) + ".btf"
                    if len(outputs) == 1 else o.kernel.rel_path())
            info = tarfile.TarInfo(name)
            info.size = len(o.emitted.data)
            info.mode = 0o644
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(o.emitted.data))
    return buf.getvalue()


def btfhub_archive(name: str, data: bytes) -> bytes:
    """A btfhub `<release>.btf.tar.xz`: one member `<release>.btf`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = int(time.time())
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def emitted_meta(emitted: EM.Emitted, rel_file: str) -> dict:
    """The DB meta keys saying which BTF the hive holds for a kernel we emitted it for."""
    import hashlib
    return {"btf_origin": "emitted", "btf_emitted_by": f"dbhive {__version__}",
            "btf_profile": emitted.profile, "btf_file": rel_file,
            "btf_sha256": hashlib.sha256(emitted.data).hexdigest()}


def kernel_btf_meta(data: bytes, rel_file: str) -> dict:
    import hashlib
    return {"btf_origin": "kernel", "btf_file": rel_file,
            "btf_sha256": hashlib.sha256(data).hexdigest()}


# ---- `dbhive build --with-btf` ------------------------------------------------------------

def build_btf_files(graph: M.TypeGraph, meta: dict, kernel_path: str, is_raw_btf: bool,
                    has_btf: bool, hive: Optional[str], db_dest: str, with_btf: bool,
                    btf_dir: Optional[str], max_btf_bytes: Optional[int] = None) -> tuple:
    """([(path, bytes)], meta keys) of the BTF a build keeps beside its DB: in a hive the
    kernel's own BTF at <hive>/<arch>/btf/<release>.btf (as every build does), or with
    `with_btf` for a kernel without one the BTF emitted from its types; `with_btf` also
    writes btfhub's `<release>.btf.tar.xz` beside it, or `<db>.btf` beside a single DB,
    and `btf_dir` a `vmlinux-<release>.btf` there (the /usr/lib/btf/ name agents read)."""
    from ..build import read_btf_bytes
    with_btf = with_btf or btf_dir is not None
    limit = {} if max_btf_bytes is None else {"max_bytes": max_btf_bytes}
    own = read_btf_bytes(kernel_path, is_raw_btf, **limit) if (is_raw_btf or has_btf) and (
        hive or with_btf) else None
    if own is None and not with_btf:
        return [], {}
    release, flavour = meta["release"], meta.get("flavour")
    if hive:
        dest = hivemod.btf_path(hive, meta["arch"], release, flavour)
        rel = os.path.relpath(dest, hive)
    else:
        dest = (db_dest[:-3] if db_dest.endswith(".db") else db_dest) + ".btf"
        rel = os.path.basename(dest)
    if own is not None:
        data, keys = own, kernel_btf_meta(own, rel)
    else:
        emitted = EM.emit(graph, "current", byte_order(meta.get("arch") or ""))
        data, keys = emitted.data, emitted_meta(emitted, rel)
    files = [(dest, data)]
    if with_btf and hive:
        files.append((dest[:-len(".btf")] + ".btf.tar.xz",
                      btfhub_archive(os.path.basename(dest), data)))
    if btf_dir is not None:
        name = hivemod.safe_component(release, "release")       # /usr/lib/btf/vmlinux-$(uname -r)
        files.append((os.path.join(btf_dir, f"vmlinux-{name}.btf"), data))
    return files, keys


def write_files(files: list) -> None:
    from ..output import write_bytes
    for path, data in files:
        write_bytes(path, data, mode=0o644)
