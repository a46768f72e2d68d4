"""The units of one file split across forked worker processes: each worker scans and
interns its contiguous share, the parent merges the key tables in order (so the result is
the one a single process would give).  A worker that dies or fails is reported, never
waited for forever."""
from __future__ import annotations

import multiprocessing
import traceback

from ..errors import DwarfError
from .keys import KeyTable
from .reader import UnitError


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


def run_parallel(reader, units, jobs, tick):
    """Read `units` in `jobs` forked workers; returns the merged (KeyTable, functions)."""
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
