"""DWARF -> TypeGraph: every struct, union, enum, typedef, base type and function
prototype of an ELF file's debug information, in the shared model (dbhive/model.py).

    graph = read_dwarf("vmlinux", progress=True)         # graph.source == "dwarf"

Covers DWARF 2-5 (all forms incl. strx*/line_strp/implicit_const/ref_addr/data16/ref_sig8),
.debug_types and DWARF 5 type units, dwz files (partial/imported units, in the same file or
a .gnu_debugaltlink supplementary file), split-DWARF .dwo files, compressed sections, and
relocatable objects (kernel modules: relocations applied; a linked vmlinux's leftover
.rela.debug_* are not, its values being final).

What the graph holds:
  * types deduplicated across units; a name with several layouts keeps each, tagged with
    the unit it was first read from (`Type.origin`; for a dwz partial unit, a unit that
    imports it; type units have none);
  * types declared inside functions (BTF and `pahole --show_private_classes` list them);
  * functions like pahole's BTF encoder picks them: definitions with machine code, or
    whose name is an ELF function symbol (folded aliases); each distinct
    (name, prototype, static, file, line) once, functions with code first;
  * a declaration-only struct/union/enum is a FWD; a pointer to a named struct reaches the
    first complete layout of that name.

How it is fast enough (see dwarf_forms.py / dwarf_scan.py): per-abbreviation decoders
compiled to Python, function bodies skipped via DW_AT_sibling, the types of a header
deduplicated by interning (dwarf_build.py), and the units split across worker processes
(fork; each worker interns its share, the parent merges the key tables).
"""
from __future__ import annotations

import gc
import multiprocessing
import os
import sys
import traceback
from typing import Callable, Optional, Union

from . import model as M
from .dwarf_build import KeyTable, finalize
from .dwarf_elf import has_debug_info
from .dwarf_reader import Reader, UnitError

__all__ = ["DwarfError", "has_dwarf", "read_dwarf"]

# below this much .debug_info one process is faster than forking workers
_PARALLEL_MIN_BYTES = 16 << 20


class DwarfError(Exception):
    """Unreadable or malformed DWARF.  The message names the file, section and offset."""

    def __init__(self, msg, path=None, section=None, offset=None):
        super().__init__(msg)
        self.path, self.section, self.offset = path, section, offset


def has_dwarf(elf_path) -> bool:
    """True if the file is an ELF file with a .debug_info (or .zdebug_info / .dwo) section."""
    return has_debug_info(os.fspath(elf_path))


ProgressArg = Union[bool, Callable[[int, int], None], None]


def read_dwarf(elf_path, progress: ProgressArg = False, jobs: Optional[int] = None,
               module: str = "vm") -> M.TypeGraph:
    """Read every type and function prototype of `elf_path`'s DWARF.

    progress: True for a tqdm bar on stderr, or a callable `(units_done, units_total)`.
    jobs: worker processes (default: up to 2 when the file is large, else 1).
    module: the `Function.module` of the functions ('vm' for vmlinux, else a module name).
    Raises DwarfError (file, section and offset in the message); never returns a partial
    graph."""
    path = os.fspath(elf_path)
    try:
        reader = Reader(path)
    except UnitError as e:
        raise DwarfError(str(e), e.path, e.section, e.offset) from None
    except OSError as e:
        raise DwarfError(f"{path}: cannot read ({e.strerror or e})", path) from None
    # compile units first: a type that dwz moved to a partial unit, or that lives in a type
    # unit, is then first met from a compile unit, whose name becomes its origin
    units = [i for i, u in enumerate(reader.units) if reader.is_compile_unit(u)]
    units += [i for i, u in enumerate(reader.units) if not reader.is_compile_unit(u)]
    try:
        reader.prepare_origins()       # dwz files: who imports each partial unit (once)
    except UnitError as e:
        raise DwarfError(str(e), e.path, e.section, e.offset) from None
    if jobs is None:
        size = len(reader.main.info) + len(reader.main.types)
        jobs = min(2, os.cpu_count() or 1) if size >= _PARALLEL_MIN_BYTES else 1
    jobs = max(1, min(jobs, len(units) or 1))
    tick, close = _progress(progress, len(units))
    # Millions of small tuples and no reference cycles: the cyclic GC would only rescan
    # the growing heap over and over (a quarter of the time), so it is paused meanwhile.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20000))
    try:
        if jobs == 1:
            res = reader.process(units, tick=tick)
            table, functions = res.t, res.function_list()
        else:
            table, functions = _parallel(reader, units, jobs, tick)
        return finalize(table, functions, module)
    except UnitError as e:
        raise DwarfError(str(e), e.path, e.section, e.offset) from None
    finally:
        sys.setrecursionlimit(old_limit)
        if gc_was_enabled:
            gc.enable()
        close()


# ---------------------------------------------------------------------------

def _progress(progress: ProgressArg, total: int):
    """(tick(done), close()) for the requested kind of progress report."""
    if callable(progress):
        return (lambda done: progress(done, total)), (lambda: None)
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="CU", desc="DWARF", dynamic_ncols=True, leave=False)
        state = [0]

        def tick(done):
            bar.update(done - state[0])
            state[0] = done
        return tick, bar.close
    return None, (lambda: None)


def _split(reader, units, jobs):
    """Contiguous slices of `units` of about equal byte size (contiguity keeps the merged
    type order the same as a single-process run)."""
    sizes = [reader.units[i].end - reader.units[i].offset for i in units]
    total = sum(sizes) or 1
    parts, cur, acc = [], [], 0
    for i, s in zip(units, sizes):
        cur.append(i)
        acc += s
        if acc >= total * (len(parts) + 1) / jobs and len(parts) < jobs - 1:
            parts.append(cur)
            cur = []
    parts.append(cur)
    return [p for p in parts if p]


def _worker(reader, units, wid, queue):
    try:
        step = max(1, len(units) // 100)

        def tick(n):
            if n % step == 0 or n == len(units):
                queue.put(("tick", wid, n))
        res = reader.process(units, tick=tick)
        queue.put(("done", wid, (res.t.keys, res.t.origins, res.function_list())))
    except UnitError as e:
        queue.put(("error", wid, (str(e), e.path, e.section, e.offset)))
    except BaseException as e:                    # report, never hang the parent
        queue.put(("crash", wid, "".join(traceback.format_exception(e))))


def _parallel(reader, units, jobs, tick):
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    parts = _split(reader, units, jobs)
    procs = [ctx.Process(target=_worker, args=(reader, part, wid, queue), daemon=True)
             for wid, part in enumerate(parts)]
    for p in procs:
        p.start()
    done_units = [0] * len(parts)
    results = [None] * len(parts)
    try:
        pending = len(parts)
        while pending:
            try:
                kind, wid, payload = queue.get(timeout=5)
            except Exception:                     # queue.Empty: check the workers live
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise DwarfError(f"{reader.path}: a DWARF worker died "
                                     f"(exit code {dead[0].exitcode})", reader.path) from None
                continue
            if kind == "tick":
                done_units[wid] = payload
                if tick is not None:
                    tick(sum(done_units))
            elif kind == "done":
                results[wid] = payload
                pending -= 1
            elif kind == "error":
                raise DwarfError(payload[0], payload[1], payload[2], payload[3])
            else:
                raise RuntimeError(f"DWARF worker {wid} crashed:\n{payload}")
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    table = KeyTable()
    functions = []
    for keys, origins, funcs in results:
        m = table.merge(keys, origins)
        functions.extend((n, m[proto], st, f, ln, rk) for (n, proto, st, f, ln, rk) in funcs)
    return table, functions
