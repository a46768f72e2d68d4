"""The units of one file split across processes: this one and forked workers each scan
and intern a contiguous share, then this one merges the workers' key tables into its own in
order (so the result is the one a single process would give).  A worker that dies or fails
is reported, never waited for forever.

The shares are of about equal time by byte size, but a process's speed varies (on a busy
or virtual machine one share often took 0.2-0.5 s longer than the other): one that is done
with its own share takes the back half of what is left of the largest other share (a
piece), reads it into a key table of its own and goes on so until nothing is left.  Each
share and each piece is a contiguous run of units read in order, and they are merged in
unit order, so the merged table is still the one a single process reads: a piece's table
holds the keys its units use in the order they first use them, of which the merge adds
the ones no earlier unit had."""
from __future__ import annotations

import bisect
import contextlib
import multiprocessing
import os
import signal
import traceback

from .. import model as M
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


# a piece is taken only when what is left of a share is at least this many bytes of units
# (a piece's table starts empty: below this its own interning costs more than it saves)
_MIN_PIECE_BYTES = 1 << 20
_LOCK_WAIT = 30.0


class _Shares:
    """Who reads which unit: per share, its units, the cumulative byte sizes, and in
    memory shared by the processes the first unit its owner has not taken and the first
    unit taken away as a piece (owner: from the front; the others: from the back)."""

    def __init__(self, ctx, reader, parts):
        self.path, self.parts = reader.path, parts
        self.cum = []
        for part in parts:
            acc, cum = 0, [0]
            for i in part:
                u = reader.units[i]
                acc += u.end - u.offset
                cum.append(acc)
            self.cum.append(cum)
        self.bounds = ctx.Array("q", [v for p in parts for v in (0, len(p))])
        self.lock = self.bounds.get_lock()

    @contextlib.contextmanager
    def _locked(self):
        # held for microseconds: a wait this long means its holder died holding it
        if not self.lock.acquire(timeout=_LOCK_WAIT):
            raise DwarfError(f"{self.path}: a DWARF worker died while it held the lock of "
                             f"the shares", self.path)
        try:
            yield
        finally:
            self.lock.release()

    def own_units(self, share):
        """The owner's units of `share`, one at a time, while none are left to the others."""
        b = self.bounds
        while True:
            with self._locked():
                front, back = b[2 * share], b[2 * share + 1]
                if front >= back:
                    return
                b[2 * share] = front + 1
            yield self.parts[share][front]

    def take_piece(self):
        """(share, start, units) of the back half (by bytes) of what is left of the share
        with the most left, or None when no share has _MIN_PIECE_BYTES left."""
        b = self.bounds
        with self._locked():
            best, left = None, _MIN_PIECE_BYTES - 1
            for s, cum in enumerate(self.cum):
                front, back = b[2 * s], b[2 * s + 1]
                if back - front >= 2 and cum[back] - cum[front] > left:
                    best, left = s, cum[back] - cum[front]
            if best is None:
                return None
            front, back = b[2 * best], b[2 * best + 1]
            cum = self.cum[best]
            half = (cum[front] + cum[back]) / 2
            start = min(max(bisect.bisect_left(cum, half, front + 1, back), front + 1), back - 1)
            b[2 * best + 1] = start
        return best, start, self.parts[best][start:back]


def _read_pieces(reader, shares, done):
    """Pieces of the others' shares, read until none is left: [(share, start, keys,
    origins, functions)].  `done(n)`: called with the number of units read after each."""
    pieces = []
    while True:
        piece = shares.take_piece()
        if piece is None:
            return pieces
        share, start, units = piece
        res = reader.process(units)
        pieces.append((share, start, res.t.keys, res.t.origins, res.function_list()))
        done(len(units))


# a worker sends the keys it made so far this many times during its share: this process
# takes them in while it reads its own share, so that little is left to send at the end
_KEY_PARTS = 8


def _worker(reader, shares, wid, queue, parent_pid):
    die_with_parent(parent_pid)           # a killed parent must not leave us waiting forever
    # interrupts are the parent's to handle; its terminate() must end us at once, whatever
    # handler we inherited (batch's raises KeyboardInterrupt: we would then wait at exit for
    # a queue the parent no longer reads, and the parent for us)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        units = shares.parts[wid]
        step = max(1, len(units) // 100)
        part = max(1, len(units) // _KEY_PARTS)
        sent = [0]
        done = [0]                        # units read
        table = KeyTable()

        def send_keys():
            n = len(table.keys)
            queue.put(("keys", wid, (table.keys[sent[0]:n], table.origins[sent[0]:n])))
            sent[0] = n

        def tick(n):
            done[0] = n
            if n % step == 0:
                queue.put(("tick", wid, n))
            if n % part == 0:
                send_keys()
        res = reader.process(shares.own_units(wid), table, tick=tick)
        send_keys()
        # the share's functions now: this process takes them in while it still reads
        queue.put(("functions", wid, res.function_list()))
        queue.put(("tick", wid, done[0]))

        def piece_done(n):
            done[0] += n
            queue.put(("tick", wid, done[0]))
        for piece in _read_pieces(reader, shares, piece_done):
            queue.put(("piece", wid, piece))
        queue.put(("done", wid, None))
    except UnitError as e:
        queue.put(("error", wid, (str(e), e.path, e.section, e.offset)))
    except BaseException as e:                    # report, never hang the parent
        queue.put(("crash", wid, "".join(traceback.format_exception(e))))


def run_parallel(reader, units, jobs, tick, defer_free=False):
    """Read `units` with `jobs` processes (this one and jobs - 1 forked workers); returns
    the merged (KeyTable, functions).  `defer_free`: see api._read_keys."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    shares = _Shares(ctx, reader, _split(reader, units, jobs))
    nshares = len(shares.parts)
    procs = [ctx.Process(target=_worker, args=(reader, shares, wid, queue, os.getpid()),
                         daemon=True)
             for wid in range(1, nshares)]
    for p in procs:
        p.start()
    done_units = [0] * nshares                # units read by each process so far
    keys = [([], []) for _ in range(nshares)]  # each worker's keys and origins, as they come
    functions_of = [None] * nshares
    pieces = []                               # (share, start, keys, origins, functions)
    pending = [nshares - 1]

    def handle(kind, wid, payload):
        if kind == "tick":
            done_units[wid] = payload
            if tick is not None:
                tick(sum(done_units))
        elif kind == "keys":
            keys[wid][0].extend(payload[0])
            keys[wid][1].extend(payload[1])
        elif kind == "piece":
            pieces.append(payload)
        elif kind == "functions":
            functions_of[wid] = payload
        elif kind == "done":
            pending[0] -= 1
        elif kind == "error":
            raise DwarfError(payload[0], payload[1], payload[2], payload[3])
        else:
            raise RuntimeError(f"DWARF worker {wid} crashed:\n{payload}")

    def drain():                    # the workers' news while this process reads
        while True:
            try:
                msg = queue.get_nowait()
            except Exception:                     # queue.Empty
                return
            handle(*msg)

    def own_tick(n):
        handle("tick", 0, n)
        drain()

    def piece_done(n):
        handle("tick", 0, done_units[0] + n)
        drain()

    try:
        own = reader.process(shares.own_units(0), tick=own_tick)
        pieces += _read_pieces(reader, shares, piece_done)
        if defer_free:          # no unit is left to read: the bytes go while the workers send
            reader.drop_sections()
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
        # each worker has sent all: its exit (the freeing of its memory) goes on meanwhile
        return _merged(own, keys, functions_of, pieces, defer_free)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()


def _merged(own, keys, functions_of, pieces, defer_free):
    """This process's table with the workers' shares and all pieces merged in, in unit
    order: each worker's share, each after the pieces taken from the one before (a share's
    pieces come after its owner's part of it, the later one first taken)."""
    parts = [(wid, 0, keys[wid][0], keys[wid][1], functions_of[wid])
             for wid in range(1, len(keys))] + pieces
    parts.sort(key=lambda p: (p[0], p[1]))
    table = own.t
    # the functions as one process's interner has them: each at its first place, with its
    # best rank (UnitInterner._function), or the order of the ranked list changes
    ranks = own.functions
    for _share, _start, pkeys, origins, funcs in parts:
        m = table.merge(pkeys, origins)
        for name, proto, static, file, line, rank in funcs:
            fkey = (name, m[proto], static, file, line)
            if ranks.get(fkey, 2) > rank:
                ranks[fkey] = rank
    if defer_free:
        M.free_later(own)
    return table, own.function_list()
