"""read_dwarf / has_dwarf: the DWARF reader's entry points (see the package docstring)."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Optional, Union

from .. import model as M
from ..errors import DwarfError
from .keys import KeyTable, finalize
from .parallel import run_parallel
from .sections import has_debug_info
from .reader import Reader, UnitError

# below this much .debug_info one process is faster than forking workers
_PARALLEL_MIN_BYTES = 16 << 20


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
    M.free_deferred()
    with _bulk_mode():
        table, functions = _read_keys(elf_path, progress, jobs, defer_free=True)
        graph = finalize(table, functions, module)
        M.check_references(graph, os.fspath(elf_path))
        return graph


def read_dwarf_keys(elf_path, progress: ProgressArg = False, jobs: Optional[int] = None,
                    table: Optional[KeyTable] = None, known: Optional[dict] = None,
                    used: Optional[set] = None):
    """What `read_dwarf` finalizes: (KeyTable, [(name, proto, static, file, line, rank)]),
    the file's types as keys with their placeholders unresolved (keys.py).  For callers that
    merge many files into one graph (dbhive/modules/merge.py) and finalize once.

    In one process (jobs=1) the keys may go on into `table`, the table of files read
    before, with `known` its definitions the scan may jump over (UnitInterner.known): the
    files of one kernel share their headers.  `used` then gets the ids of the types this
    file's DIEs became (its own types are these and what they contain)."""
    if table is not None and jobs != 1:
        raise ValueError("a shared key table is read into in one process (jobs=1)")
    with _bulk_mode():
        return _read_keys(elf_path, progress, jobs, table, known, used)


@contextmanager
def _bulk_mode():
    # Millions of small tuples and no reference cycles: the cyclic GC would only rescan
    # the growing heap over and over (a quarter of the time), so it is paused meanwhile
    # (model.gc_paused: and what was made joins the oldest generation after, or the first
    # collection would walk all of it at once: 0.07-0.14 s on a vmlinux).
    old_limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old_limit, 20000))
    try:
        with M.gc_paused():
            yield
    finally:
        sys.setrecursionlimit(old_limit)


def _read_keys(elf_path, progress: ProgressArg, jobs: Optional[int], table=None, known=None,
               used=None, defer_free=False):
    """`defer_free`: the reader and the interners' memos are freed by the DB writer
    (model.free_later), not here."""
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
    if defer_free:
        M.free_later(reader)
    try:
        if jobs == 1:
            res = reader.process(units, table, tick, known, used)
            if defer_free:
                M.free_later(res)
            return res.t, res.function_list()
        return run_parallel(reader, units, jobs, tick, defer_free)
    except UnitError as e:
        raise DwarfError(str(e), e.path, e.section, e.offset) from None
    finally:
        close()
        if defer_free:
            reader.drop_sections()


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
