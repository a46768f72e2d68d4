"""The units of one file split across processes: this one and forked workers each scan
and intern a contiguous share, then this one merges the workers' key tables into its own in
order (so the result is the one a single process would give).  A worker that dies or fails
is reported, never waited for forever."""
from __future__ import annotations

import multiprocessing
import os
import signal
import traceback

from ..errors import DwarfError
from ..procs import die_with_parent
from .keys import KeyTable
from .reader import UnitError


# this process's share is this much larger than a worker's: a forked worker reads the
# same bytes more slowly (it copies the pages it writes to first; vmlinux: 1.65 s against
# 1.55 s for equal shares)
_OWN_SHARE_WEIGHT = 1.06


def _split(reader, units, jobs):
    """Contiguous slices of `units` of about equal time (byte size, the first one weighted
    by _OWN_SHARE_WEIGHT); contiguity keeps the merged type order the same as a
    single-process run."""
    sizes = [reader.units[i].end - reader.units[i].offset for i in units]
    total = sum(sizes) or 1
    weights = [_OWN_SHARE_WEIGHT] + [1.0] * (jobs - 1)
    ends = [total * sum(weights[:k + 1]) / sum(weights) for k in range(jobs - 1)]
    parts, cur, acc = [], [], 0
    for i, s in zip(units, sizes):
        cur.append(i)
        acc += s
        if len(parts) < jobs - 1 and acc >= ends[len(parts)]:
            parts.append(cur)
            cur = []
    parts.append(cur)
    return [p for p in parts if p]


# a worker sends the keys it made so far this many times during its share: this process
# takes them in while it reads its own share, so that little is left to send at the end
_KEY_PARTS = 8


def _worker(reader, units, wid, queue, parent_pid):
    die_with_parent(parent_pid)           # a killed parent must not leave us waiting forever
    # interrupts are the parent's to handle; its terminate() must end us at once, whatever
    # handler we inherited (batch's raises KeyboardInterrupt: we would then wait at exit for
    # a queue the parent no longer reads, and the parent for us)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        step = max(1, len(units) // 100)
        part = max(1, len(units) // _KEY_PARTS)
        sent = [0]
        table = KeyTable()

        def send_keys():
            n = len(table.keys)
            queue.put(("keys", wid, (table.keys[sent[0]:n], table.origins[sent[0]:n])))
            sent[0] = n

        def tick(n):
            if n % step == 0 or n == len(units):
                queue.put(("tick", wid, n))
            if n % part == 0 and n < len(units):
                send_keys()
        res = reader.process(units, table, tick=tick)
        send_keys()
        queue.put(("done", wid, res.function_list()))
    except UnitError as e:
        queue.put(("error", wid, (str(e), e.path, e.section, e.offset)))
    except BaseException as e:                    # report, never hang the parent
        queue.put(("crash", wid, "".join(traceback.format_exception(e))))


def run_parallel(reader, units, jobs, tick):
    """Read `units` with `jobs` processes (this one and jobs - 1 forked workers); returns
    the merged (KeyTable, functions)."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    parts = _split(reader, units, jobs)
    procs = [ctx.Process(target=_worker, args=(reader, part, wid, queue, os.getpid()),
                         daemon=True)
             for wid, part in enumerate(parts) if wid > 0]
    for p in procs:
        p.start()
    done_units = [0] * len(parts)
    keys = [([], []) for _ in parts]          # each worker's keys and origins, as they come
    functions_of = [None] * len(parts)
    pending = [len(parts) - 1]

    def handle(kind, wid, payload):
        if kind == "tick":
            done_units[wid] = payload
            if tick is not None:
                tick(sum(done_units))
        elif kind == "keys":
            keys[wid][0].extend(payload[0])
            keys[wid][1].extend(payload[1])
        elif kind == "done":
            functions_of[wid] = payload
            pending[0] -= 1
        elif kind == "error":
            raise DwarfError(payload[0], payload[1], payload[2], payload[3])
        else:
            raise RuntimeError(f"DWARF worker {wid} crashed:\n{payload}")

    def own_tick(n):                # this process's share; the workers' news meanwhile
        handle("tick", 0, n)
        while True:
            try:
                msg = queue.get_nowait()
            except Exception:                     # queue.Empty
                return
            handle(*msg)

    try:
        own = reader.process(parts[0], tick=own_tick)
        while pending[0]:
            try:
                msg = queue.get(timeout=5)
            except Exception:                     # queue.Empty: check the workers live
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise DwarfError(f"{reader.path}: a DWARF worker died "
                                     f"(exit code {dead[0].exitcode})", reader.path) from None
                continue
            handle(*msg)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    table = own.t
    # the functions as one process's interner has them: each at its first place, with its
    # best rank (UnitInterner._function), or the order of the ranked list changes
    ranks = own.functions
    for (wkeys, origins), funcs in zip(keys[1:], functions_of[1:]):
        m = table.merge(wkeys, origins)
        for name, proto, static, file, line, rank in funcs:
            fkey = (name, m[proto], static, file, line)
            if ranks.get(fkey, 2) > rank:
                ranks[fkey] = rank
    return table, own.function_list()
