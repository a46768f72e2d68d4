"""kobuild: kernel modules (`.ko` files, or the modules inside a distro package) -> one DB
of their types and functions, locally and offline.

    kobuild(["./ko/"], out="prev.db")                       # DWARF of custom modules
    kobuild(["./mods/"], base_btf="vmlinux.btf")            # the modules' split .BTF
    mods = extract_package_modules("linux-image-...-dbg.deb", workdir, ["ext4"])
    graph, meta = add_package_modules(kernel_graph, mods, release)   # dbhive build --modules

    modules --discover--> files --read (workers)--> keys --merge--> TypeGraph --store--> DB

Each module is read (its DWARF with the project's DWARF reader, relocations of the ET_REL
file applied, as keys before finalize: `read_dwarf_keys`; or its split BTF on top of the
kernel's BTF) in worker processes, a few dozen modules in flight.  A worker reads the DWARF
of all the modules it is given into one key table (merge.SharedKeys: the kernel headers'
definitions that another module brought already are jumped over, not decoded again) and
hands on only the keys new to that table; the parent merges the modules in path order (so
the result does not depend on the number of workers: tests/test_kobuild_shared.py) into
one graph and finalizes it once (merge.py).  The DB has the shape of a
kernel DB (schema.py: normalized + surftrace tables); `funs.module` and `kt_functions.module`
name each function's module, and `meta` lists the modules with their vermagic and
srcversion (key `modules`, a JSON list).

Refused, with one line naming the files: no modules found, two files of one module, modules
built for different kernels (`.modinfo` vermagic), modules for another kernel than the base.
"""
from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Optional

from .. import __version__, output
from .. import model as M
from ..errors import BuildError, InputError
from .discover import MAX_MODULE_BYTES, ModuleFile, compression_of, find_modules, opened
from .merge import ModuleDelta, ModuleKeys, SharedKeys, TypeMerger, module_keys, table_keys
from .modinfo import ModInfo, read_modinfo

SOURCES = ("dwarf", "btf")
# fewer modules than this are read in this process (forking costs more than it saves)
_PARALLEL_MIN_MODULES = 4


@dataclass
class ReadModule:
    """One module as read: its identity, its type graph (or, from a worker, the graph's
    keys: they pickle much faster) and how long it took."""
    file: ModuleFile
    info: ModInfo
    graph: Optional[M.TypeGraph]
    source: str
    split_start: int = 0          # split BTF: the first id that is the module's own
    seconds: float = 0.0
    member: str = ""              # the package member it came from (package modules)
    keys: Optional[ModuleKeys] = None
    delta: Optional[ModuleDelta] = None     # read into a table shared with other modules
    functions: int = 0

    def roots(self):
        """The types that are the module's (split BTF: not the base's)."""
        return range(self.split_start, len(self.graph.types)) if self.source == "btf" else None


@dataclass
class KobuildResult:
    db: str
    meta: dict
    modules: list = field(default_factory=list)     # [ModInfo]
    merge: dict = field(default_factory=dict)       # TypeMerger.stats()


# ---------------------------------------------------------------------------------------
# reading one module

# what the forked workers read with (set before the pool forks: never pickled)
_worker_state: dict = {}


# the cycle collector off while a module is read or merged: the keys and the merged table are
# large and acyclic, and with it on every collection walks them again
@M.gc_paused()
def read_module(mf: ModuleFile, source: str, workdir: str, btf_base=None,
                graph: bool = False, base_release: str = "",
                limit: int = MAX_MODULE_BYTES, shared: Optional[SharedKeys] = None
                ) -> ReadModule:
    """Read one module file (decompressing it first if needed): its keys for the merge
    (`graph`: its TypeGraph instead; `shared`: its DWARF into that table of the modules
    read before, as a delta).  `base_release`: the release of the kernel BTF its
    split BTF is read over; a module built for another is refused before it is read.
    `limit`: the most bytes a compressed module (or a raw BTF file) may have."""
    from ..elf import ElfFile
    t0 = time.perf_counter()
    if mf.raw_btf:
        if source != "btf":
            raise InputError(f"{mf.path}: raw BTF, not a module with DWARF: read it with "
                             f"--base-btf <the kernel's BTF>")
        from ..btf.reader import read_btf_file
        data = read_btf_file(mf.path, limit)          # as much as its header declares
        rm = ReadModule(mf, ModInfo(mf.name), None, source)
        _read_split_btf(rm, data, btf_base, graph)
        rm.seconds = time.perf_counter() - t0
        return rm
    with opened(mf, workdir, limit) as path:
        with ElfFile(path) as elf:
            info = read_modinfo(elf, mf.name)
            ptr_size = elf.ptr_size
            if source == "btf" and base_release and info.release not in ("", base_release):
                raise InputError(f"{mf.path}: module {info.name} was built for kernel "
                                 f"{info.release}, but the base BTF is for {base_release}: "
                                 f"its split BTF cannot be read over it")
            if source == "btf":
                data = elf.section_data(".BTF")
                if data is None:
                    raise InputError(f"{mf.path}: module {info.name} has no .BTF section")
            elif not (elf.has_section(".debug_info") or elf.has_section(".zdebug_info")):
                raise InputError(f"{mf.path}: module {info.name} has no DWARF (.debug_info); "
                                 f"a stripped module's types can be read from its split .BTF: "
                                 f"--base-btf <the kernel's BTF>")
        rm = ReadModule(mf, info, None, source)
        if source == "btf":
            _read_split_btf(rm, data, btf_base, graph, ":.BTF")
        elif graph:
            from ..dwarf import read_dwarf
            rm.graph = read_dwarf(path, module=info.name, jobs=1)
            rm.functions = len(rm.graph.functions)
        elif shared is not None:
            rm.delta = shared.read(path, info.name, ptr_size)
            rm.functions = len(rm.delta.functions)
        else:
            from ..dwarf import read_dwarf_keys
            table, functions = read_dwarf_keys(path, jobs=1)
            rm.keys = table_keys(table, functions, info.name, ptr_size=ptr_size)
            rm.functions = len(functions)
    rm.seconds = time.perf_counter() - t0
    return rm


def _read_split_btf(rm: ReadModule, data: bytes, btf_base, graph: bool, where: str = ""):
    from ..btf.reader import read_btf
    g = read_btf(data, f"{rm.file.path}{where}", base=btf_base)
    rm.split_start = len(btf_base.graph.types)
    for f in g.functions:
        f.module = rm.info.name
    rm.functions = len(g.functions)
    if graph:
        rm.graph = g
    else:
        rm.keys = module_keys(g, rm.info.name, range(rm.split_start, len(g.types)))


def _worker_signals() -> None:
    """Workers leave interrupts to the parent, which terminates them (SIGTERM)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _work(i: int) -> ReadModule:
    st = _worker_state
    return read_module(st["files"][i], st["source"], st["workdir"], st["btf_base"],
                       base_release=st["base_release"], limit=st["limit"],
                       shared=_shared_keys(st["source"], st["share"]))


def _shared_keys(source: str, share: bool) -> Optional[SharedKeys]:
    """This process's table the DWARF of the modules it reads goes into (made once per
    process: a forked worker makes its own), or None (split BTF, or `share` off)."""
    if source != "dwarf" or not share:
        return None
    sk = _worker_state.get("shared")
    if sk is None or sk.id[0] != os.getpid():
        sk = _worker_state["shared"] = SharedKeys()
    return sk


@M.gc_paused()
def merge_module(merger: TypeMerger, rm: ReadModule, workdir: str, btf_base=None,
                 limit: int = MAX_MODULE_BYTES) -> None:
    """Merge one module read by `read_modules`.  Keys from a worker that turn out to need
    module-scoped placeholders (its own layout of a name already in the table) are set
    aside and the module is read again here, as a graph (rare).  A delta the merger
    refuses is merged the same way: the module read again here as its own keys, or as its
    graph straight away when those would need scoping too."""
    if rm.delta is not None:
        delta, rm.delta = rm.delta, None
        refused = merger.add_delta(delta)
        if refused is None:
            return
        rm = read_module(rm.file, rm.source, workdir, btf_base, graph=refused == "layout",
                         limit=limit)
        merger.rereads += 1
        merge_module(merger, rm, workdir, btf_base, limit)
        merger.map_delta(delta)
        return
    if rm.keys is not None:
        if merger.add_keys(rm.keys):
            rm.keys = None
            return
        rm = read_module(rm.file, rm.source, workdir, btf_base, graph=True, limit=limit)
        merger.rereads += 1
    merger.add(rm.graph, rm.info.name, roots=rm.roots())


def read_modules(files: list, source: str, workdir: str, btf_base=None,
                 jobs: Optional[int] = None, progress: bool = False,
                 base_release: str = "", limit: int = MAX_MODULE_BYTES,
                 share: bool = True) -> Iterator[ReadModule]:
    """Read `files` in order (forked workers for many; at most a few graphs in flight).
    `share`: the DWARF of the modules a process reads goes into one key table, as
    deltas (merge.SharedKeys); False reads each module on its own (the check that sharing
    changes nothing: tests/test_kobuild_shared.py)."""
    if jobs is None:
        jobs = min(2, os.cpu_count() or 1) if len(files) >= _PARALLEL_MIN_MODULES else 1
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(files), unit="module", desc="modules", dynamic_ncols=True,
                   leave=False)
    try:
        if jobs <= 1:
            shared = SharedKeys() if source == "dwarf" and share else None
            for mf in files:
                rm = read_module(mf, source, workdir, btf_base, base_release=base_release,
                                 limit=limit, shared=shared)
                if bar is not None:
                    bar.update(1)
                yield rm
            return
        _worker_state.update(files=files, source=source, workdir=workdir, btf_base=btf_base,
                             base_release=base_release, limit=limit, share=share)
        if source != "btf":
            from ..dwarf import reader   # noqa: F401  imported once here, not in each worker
        ctx = multiprocessing.get_context("fork")
        # results wait in order: enough in flight that a slow merge here (a module read
        # again as a graph) does not leave the workers idle; each is a module's keys only
        window = 12 * jobs
        with ctx.Pool(jobs, initializer=_worker_signals) as pool:
            pending: list = []
            nxt = 0
            for i in range(len(files)):
                while nxt < len(files) and nxt < i + window:
                    pending.append(pool.apply_async(_work, (nxt,)))
                    nxt += 1
                rm = pending.pop(0).get()
                if bar is not None:
                    bar.update(1)
                yield rm
    finally:
        _worker_state.clear()
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------------------------------
# checks

class _Checker:
    """Refuses a second module of one name and modules built for different kernels."""

    def __init__(self, release: str = "", release_of: str = ""):
        self.release, self.release_of = release, release_of
        self.names: dict = {}
        self.arch = ""

    def check(self, rm: ReadModule, error=InputError) -> None:
        info = rm.info
        where = rm.member or rm.file.path
        other = self.names.setdefault(info.name, where)
        if other != where:
            raise error(f"two files are module {info.name}: {other} and {where} (keep one)")
        rel = info.release
        if rel:
            if not self.release:
                self.release, self.release_of = rel, f"module {info.name} ({where})"
            elif rel != self.release:
                raise error(f"{where}: module {info.name} was built for kernel {rel} "
                            f"(vermagic {info.vermagic.strip()!r}), but {self.release_of} "
                            f"is for {self.release}: one DB holds one kernel's modules")
        if info.arch:
            if self.arch and info.arch != self.arch:
                raise error(f"{where}: module {info.name} is for {info.arch}, the others "
                            f"for {self.arch}")
            self.arch = info.arch


def _module_meta(rm: ReadModule) -> dict:
    d = rm.info.as_meta()
    d["file"] = rm.member or os.path.basename(rm.file.path)
    d["source"] = rm.source
    d["functions"] = rm.functions
    return d


# ---------------------------------------------------------------------------------------
# bases: the kernel the modules are for

@dataclass
class _Base:
    graph: M.TypeGraph
    release: str
    label: str


def _load_base(base: str) -> _Base:
    """`--base`: a kernel DB, or `running` (this machine's kernel, from its BTF)."""
    if base == "running":
        from ..btf import read_btf
        from ..elf import open_regular
        from ..identity import SYS_BTF, running_kernel_identity
        with open_regular(SYS_BTF, "BTF file") as fh:
            g = read_btf(fh.read(), SYS_BTF)
        return _Base(g, running_kernel_identity().release, "running")
    from .. import store
    if not os.path.isfile(base):
        raise InputError(f"--base {base}: no such DB file (a kernel DB, or `running`)")
    g = store.load_graph(base)
    return _Base(g, store.read_meta(base).get("release", ""), base)


def _complete_from(merger: TypeMerger, g: M.TypeGraph, base: _Base) -> int:
    """Add the base's layouts of the structs/unions/enums the modules only declare
    (with what they contain by value).  Returns how many were added."""
    wanted = {(t.encoding or M.STRUCT, t.name) for t in g.types if t.kind == M.FWD and t.name}
    roots = []
    for tid, t in enumerate(base.graph.types):
        key = (t.kind, t.name)
        if key in wanted and t.size is not None:
            roots.append(tid)
            wanted.discard(key)
    if roots:
        merger.add(base.graph, "vm", roots=roots, functions=[])
    return len(roots)


# ---------------------------------------------------------------------------------------
# kobuild

def kobuild(inputs: Iterable[str], out: str = "prev.db", base: Optional[str] = None,
            base_btf: Optional[str] = None, source: Optional[str] = None,
            jobs: Optional[int] = None, progress: bool = False,
            max_module_bytes: int = MAX_MODULE_BYTES, share: bool = True) -> KobuildResult:
    """Build the DB of the modules in `inputs` (files and directories) at `out`.

    source: 'dwarf' (default) or 'btf' (the default with `base_btf`: the modules' split
    .BTF read on top of that kernel BTF, raw or an ELF's .BTF section).
    base: a kernel DB or 'running': the layouts of types the modules only declare are
    taken from it, and the modules must be built for its release.
    share: see read_modules.
    Nothing is written unless the whole DB is (temp file + rename)."""
    inputs = list(inputs)
    if not inputs:
        raise InputError("no input: give .ko files or directories holding them")
    src = source or ("btf" if base_btf else "dwarf")
    if src not in SOURCES:
        raise BuildError(f"unknown type source {src!r} (dwarf or btf)")
    if src == "btf" and not base_btf:
        raise BuildError("split BTF needs the kernel's BTF it continues: --base-btf FILE "
                         "(/sys/kernel/btf/vmlinux, a vmlinux, or a .btf file)")
    output.check_destination(out, must_exist_dir=True)      # before any work
    files = find_modules(inputs)
    if not files:
        raise InputError(f"no kernel modules (*.ko, *.ko.debug, *.ko.xz|zst|gz) in "
                         f"{', '.join(inputs)}")
    btf_base = _load_btf_base(base_btf) if src == "btf" else None
    base_info = _load_base(base) if base else None
    if base_info is not None:
        checker = _Checker(base_info.release, "the running kernel" if base == "running"
                           else f"the base {base}")
    elif btf_base is not None:
        # split BTF read over another kernel's BTF gives wrong types silently: refuse
        # modules whose vermagic says another kernel than the base BTF's (when it is known)
        checker = _Checker(_release_of(base_btf), f"the base BTF {base_btf}")
    else:
        checker = _Checker()
    btf_release = checker.release if btf_base is not None else ""
    merger = TypeMerger()
    read: list = []
    out_dir = output.check_destination(out, must_exist_dir=True)
    output.sweep_stale_temps(out_dir)
    tmp = output.temp_dir(out_dir)          # decompressed modules
    try:
        for rm in read_modules(files, src, tmp, btf_base, jobs, progress, btf_release,
                               max_module_bytes, share):
            checker.check(rm)
            merge_module(merger, rm, tmp, btf_base, max_module_bytes)
            read.append(_module_meta(rm))
            rm.graph = None                     # keep memory to the merged table
        g = merger.graph()
        completed = 0
        if base_info is not None:
            completed = _complete_from(merger, g, base_info)
            if completed:
                g = merger.graph()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    release = checker.release
    from ..identity import kernel_flavour
    meta = {
        "db_kind": "modules",
        "release": release,
        "arch": checker.arch,
        "build_id": "",
        "flavour": kernel_flavour(release) if release else "",
        "distro": "",
        "source_file": ", ".join(os.path.basename(os.path.normpath(p)) for p in inputs),
        "source_kind": "modules",
        "type_source": src,
        "modules": json.dumps(read, separators=(",", ":")),
        "module_count": len(read),
        "base": base_info.label if base_info else "",
        "base_types": completed,
        "base_btf": base_btf or "",
        "builder_version": __version__,
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    from .. import store
    meta = store.write_db(g, meta, out, must_exist_dir=True)
    return KobuildResult(out, meta, read, merger.stats())


def _release_of(kernel_file: str) -> str:
    """The release of a kernel file (vmlinux, /sys/kernel/btf/vmlinux, <release>.btf), or ''
    when it does not say."""
    from ..identity import kernel_identity
    try:
        return kernel_identity(kernel_file).release
    except InputError:
        return ""


def _load_btf_base(path: str):
    from ..archive.detect import detect_input
    from ..btf.reader import read_btf_base
    kind = detect_input(path)
    if kind == "elf":
        from ..elf import elf_section_bytes
        data = elf_section_bytes(path, ".BTF")
    elif kind == "raw-btf":
        from ..elf import open_regular
        with open_regular(path, "BTF file") as fh:
            data = fh.read()
    else:
        raise InputError(f"--base-btf {path}: not a BTF file or an ELF file with .BTF")
    return read_btf_base(data, path)


# ---------------------------------------------------------------------------------------
# the modules of a distro package, into the kernel's DB (`dbhive build --modules`)

def extract_package_modules(package: str, workdir: str, wanted: Optional[list],
                            progress: bool = False) -> list:
    """The modules of `package` (`wanted`: module names, or None for all) extracted into
    `workdir`, in member order.  BuildError when a module asked for is not there."""
    from ..archive import extract_modules, module_name
    names = None if wanted is None else [module_name(n) for n in wanted]
    extracted = extract_modules(package, workdir, names, progress=progress)
    if names is not None:
        missing = sorted(set(names) - {e.name for e in extracted})
        if missing:
            for e in extracted:
                os.unlink(e.path)
            raise BuildError(f"{package}: no module {', '.join(missing)} in this package")
    if not extracted:
        raise BuildError(f"{package}: the package has no kernel modules")
    return sorted(extracted, key=lambda e: e.member)


def add_package_modules(kernel_graph: M.TypeGraph, extracted: list, release: str,
                        jobs: Optional[int] = None, progress: bool = False) -> tuple:
    """(graph, meta) of the kernel `kernel_graph` plus the extracted package modules
    (`extract_package_modules`), read from their DWARF; each module's temp file is removed
    once read.  BuildError for a module built for another release than the kernel's."""
    files = [ModuleFile(e.path, e.name, compression_of(e.path)) for e in extracted]
    members = {e.path: e.member for e in extracted}
    merger = TypeMerger()
    merger.add(kernel_graph, "vm")
    checker = _Checker(release, f"the kernel ({release})")
    read = []
    workdir = os.path.dirname(files[0].path)
    for rm in read_modules(files, "dwarf", workdir, None, jobs, progress):
        rm.member = members[rm.file.path]
        checker.check(rm, error=BuildError)
        merge_module(merger, rm, workdir)
        read.append(_module_meta(rm))
        rm.graph = None
        os.unlink(rm.file.path)                   # disk too stays bounded
    g = merger.graph()
    return g, {"modules": json.dumps(read, separators=(",", ":")), "module_count": len(read)}
