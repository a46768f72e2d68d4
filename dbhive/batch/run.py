"""The batch scheduler: every package of a hive (or of one shard) through `dbhive.build.build`.

    parent: find packages -> decide from records what is done -> fork one process per
            package, at most `jobs` at once (fewer when memory or scratch disk is short)
    child:  sha256 of the input -> already built? -> build() -> record (built/alias/failed)

Resumable: a package is done when its DB's own meta says so (same input sha256 and builder
version, `records.complete_db`); its record only saves reading the package again.  DBs are
written by build() through temp file + rename, so a `kill -9` at any moment leaves every
finished DB in place and no half-written one under a DB name; children die with the parent
(PR_SET_PDEATHSIG), DWARF workers with their child.

Identical kernels (the same GNU build-id; the same BTF blob for raw BTF) are built once per
run: each child asks the parent (over its pipe) once it knows the identity, before reading
any types, and the parent answers in package order - the answer for package k waits until
every earlier package running has asked or ended - so which one is built does not depend on
timing: with any --jobs it is the first in package order, as with --jobs 1.  The others are
recorded as aliases; if the one being built fails, its aliases are queued again.  A kernel
whose DB already exists in the hive (another package, a finished shard on a shared volume)
is an alias of that DB.  Two different kernels that would get the same DB path (same release
and distro) are a conflict: the first in package order is built, the other fails saying so.
"""
from __future__ import annotations

import collections
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .. import __version__, hive as hivemod, output, procs
from ..errors import BuildError, DbhiveError
from . import records
from .pack import Package, find_packages, shard_of
from .resources import Budget, cpu_count

SKIPPED, FAILED_EARLIER = "skipped", "failed-earlier"
STATUSES = (records.BUILT, SKIPPED, records.ALIAS, records.FAILED, FAILED_EARLIER)
_KIND_NEEDS_ARCH = ("raw-btf", "btf-archive")      # inputs that cannot tell their arch


@dataclass
class Options:
    hive: str
    jobs: int = 1
    workers: Optional[int] = None       # DWARF processes per build (default: CPUs / jobs)
    shard: Optional[tuple] = None       # (index, count)
    arches: tuple = ()
    distros: tuple = ()
    retry_failed: bool = False
    keep_vmlinux: bool = False
    scratch: Optional[str] = None       # where packages are extracted (default: $TMPDIR)
    memory: Optional[int] = None        # bytes the builds may use (default: available now)
    with_btf: bool = False              # also BTF for each kernel (`dbhive build --with-btf`)
    with_header: bool = False           # also its C header (`dbhive build --with-header`)


@dataclass
class Outcome:
    package: str
    status: str
    release: str = ""
    arch: str = ""
    build_id: str = ""
    type_source: str = ""
    db: str = ""
    alias_of: str = ""
    reason: str = ""
    seconds: float = 0.0
    head: str = ""              # its C header (--with-header)

    @classmethod
    def of(cls, status: str, rec: dict) -> "Outcome":
        return cls(package=rec["package"], status=status, release=rec.get("release", ""),
                   arch=rec.get("arch", ""), build_id=rec.get("build_id", ""),
                   type_source=rec.get("type_source", ""), db=rec.get("db", ""),
                   alias_of=rec.get("alias_of", ""), reason=rec.get("reason", ""),
                   seconds=float(rec.get("seconds") or 0.0), head=rec.get("head", ""))


@dataclass
class Result:
    outcomes: list = field(default_factory=list)
    packages: int = 0           # in this shard
    jobs: int = 1               # builds run at once
    workers: int = 1
    shard: Optional[tuple] = None
    seconds: float = 0.0
    interrupted: bool = False

    def counts(self) -> dict:
        out = {s: 0 for s in STATUSES}
        for o in self.outcomes:
            out[o.status] += 1
        return out


# ----------------------------------------------------------------------------- the hive now

@dataclass
class Snapshot:
    """The complete DBs of this builder version already in the hive when the run starts."""
    by_sha: dict = field(default_factory=dict)        # input sha256 -> DB path
    by_kernel: dict = field(default_factory=dict)     # kernel key -> DB path
    meta: dict = field(default_factory=dict)          # DB path -> meta

    @classmethod
    def of(cls, hive: str) -> "Snapshot":
        snap = cls()
        for entry in hivemod.iter_dbs(hive):
            meta = records.complete_db(entry.path)
            if meta is None:
                continue
            snap.meta[entry.path] = meta
            if meta.get("source_sha256"):
                snap.by_sha.setdefault(meta["source_sha256"], entry.path)
            key = kernel_key(meta)
            if key:
                snap.by_kernel.setdefault(key, entry.path)
        return snap


def kernel_key(meta: dict) -> Optional[tuple]:
    """What makes two inputs the same kernel: the GNU build-id, else the raw BTF's sha256."""
    if meta.get("build_id"):
        return ("build-id", meta["build_id"])
    if meta.get("btf_sha256"):
        return ("btf", meta["btf_sha256"])
    return None


# ----------------------------------------------------------------------------- the parent

@dataclass
class _Task:
    pkg: Package
    sha: Optional[str]          # from a record still matching the file
    old: Optional[dict]         # the record found, if any
    seq: int = 0


@dataclass
class _Running:
    task: _Task
    proc: multiprocessing.Process
    conn: multiprocessing.connection.Connection
    started: float
    asked: bool = False         # it asked its identity question (or will not any more)
    outcome: Optional[Outcome] = None
    kernel: Optional[tuple] = None   # the claim it holds (kernel key, DB path)
    peak_rss: int = 0
    kernel_bytes: int = 0
    type_source: str = ""
    alias_of: Optional[int] = None   # seq of the package building its kernel


def run(opts: Options, report: Callable[[Outcome], None] = lambda o: None,
        warn: Callable[[str], None] = lambda m: None,
        started: Callable[[int], None] = lambda n: None) -> Result:
    """Run the batch; `report` is called with each package's outcome as it is known,
    `started(n)` once with the number of packages this run looks at, `warn` once if fewer
    builds than --jobs fit at the same time."""
    t0 = time.monotonic()
    hive = opts.hive
    scratch = opts.scratch or _default_scratch()
    every = find_packages(hive, opts.arches, opts.distros)
    mine = [p for p in every if opts.shard is None or
            shard_of(p.rel, opts.shard[1]) == opts.shard[0]]
    result = Result(packages=len(mine), shard=opts.shard)
    started(len(mine))

    def done(outcome: Outcome) -> None:
        result.outcomes.append(outcome)
        report(outcome)

    budget = Budget.now(scratch)
    if opts.memory:
        budget.memory = opts.memory
    todo: list[_Task] = []
    for pkg in mine:
        old = records.read(pkg.record_path)
        if old and old.get("type_source") == "dwarf" and old.get("status") == records.BUILT:
            budget.learn(old.get("peak_rss"), old.get("kernel_bytes"))   # earlier runs
        if records.matches_input(old, pkg.size, pkg.mtime_ns):
            outcome = _decided(hive, old, opts)
            if outcome:
                done(outcome)
                continue
            todo.append(_Task(pkg, old["sha256"], old))
        else:
            todo.append(_Task(pkg, None, old))

    wanted = max(1, opts.jobs)
    jobs, why = budget.fits(wanted)
    result.jobs = jobs
    result.workers = opts.workers or max(1, cpu_count() // jobs)
    sched = _Scheduler(opts, hive, scratch, result.workers, Snapshot.of(hive), every, budget,
                       done, warn)
    if why:
        sched.say_fewer(wanted, why)
    try:
        sched.loop(todo, jobs)
    except KeyboardInterrupt:
        sched.stop()
        result.interrupted = True
    result.seconds = time.monotonic() - t0
    return result


def _decided(hive: str, rec: dict, opts: Options) -> Optional[Outcome]:
    """What a record still matching its package says without building, or None."""
    if rec.get("builder_version") != __version__:
        return None
    status, db = rec.get("status"), os.path.join(hive, rec.get("db") or "")
    meta = records.complete_db(db, rec["sha256"]) if status == records.BUILT else None
    if meta and records.outputs_complete(hive, meta, opts.with_btf) and \
            (not opts.with_header or records.header_complete(hive, meta)):
        outcome = Outcome.of(SKIPPED, rec)
        if opts.with_header:
            outcome.head = os.path.relpath(records.head_of(hive, meta), hive)
    elif status == records.ALIAS and records.complete_db(db, build_id=rec.get("build_id")):
        outcome = Outcome.of(records.ALIAS, rec)
    elif status == records.FAILED and not opts.retry_failed:
        outcome = Outcome.of(FAILED_EARLIER, rec)
    else:
        return None
    outcome.seconds = 0.0               # nothing was done for it in this run
    return outcome


def _default_scratch() -> str:
    import tempfile
    return tempfile.gettempdir()


class _Scheduler:
    def __init__(self, opts, hive, scratch, workers, snap, every, budget, done, warn):
        self.opts, self.hive, self.scratch, self.workers = opts, hive, scratch, workers
        self.snap, self.budget, self.done, self.warn = snap, budget, done, warn
        # which package a DB of the hive came from (its meta names distro and file)
        self.by_source = {(p.arch, p.distro, os.path.basename(p.rel)): p.rel for p in every}
        self.ctx = multiprocessing.get_context("fork")
        self.running: dict[int, _Running] = {}
        self.claims: dict = {}          # kernel key -> (seq, package, DB path)
        self.db_claims: dict = {}       # DB path -> (seq, package, kernel key)
        self.pending: dict = {}         # seq -> identity question not answered yet
        self.deferred: dict = {}        # seq of a package building a kernel -> its aliases
        self.built: set = set()         # seqs that built their kernel
        self.seq = 0
        self.run_id = f"{os.getpid()}-{time.time_ns()}"
        self.said_fewer = False
        self.queue: collections.deque = collections.deque()

    def say_fewer(self, wanted: int, why: str) -> None:
        if not self.said_fewer:
            self.said_fewer = True
            self.warn(f"--jobs {wanted}: {why}")

    # -- main loop
    def loop(self, todo: list, limit: int) -> None:
        self.queue = collections.deque(todo)
        wanted = limit
        while self.queue or self.running:
            fit, why = self.budget.fits(wanted)
            if fit < limit:             # a measured build shows fewer fit than estimated
                limit = fit
                self.say_fewer(wanted, why)
            while self.queue and len(self.running) < limit:
                self._start(self.queue.popleft())
            self._wait()

    def _start(self, task: _Task) -> None:
        self.seq += 1
        task.seq = self.seq
        parent_end, child_end = self.ctx.Pipe()
        proc = self.ctx.Process(target=_child, name=f"dbhive-batch-{task.seq}",
                                args=(task, child_end, self.opts, self.hive, self.scratch,
                                      self.workers, self.snap.by_sha, self.run_id,
                                      os.getpid()))
        proc.start()
        child_end.close()
        self.running[task.seq] = _Running(task, proc, parent_end, time.monotonic())

    def _wait(self) -> None:
        if not self.running:
            return
        handles = {}
        for seq, r in self.running.items():
            handles[r.proc.sentinel] = seq
            if not r.conn.closed:
                handles[r.conn] = seq
        for ready in multiprocessing.connection.wait(list(handles), timeout=1.0):
            r = self.running.get(handles[ready])
            if r is not None and ready is r.conn and not r.conn.closed:
                self._message(r)
        for seq in [s for s, r in self.running.items() if r.proc.exitcode is not None]:
            self._ended(self.running.pop(seq))
        self._answer()

    def _message(self, r: _Running) -> None:
        try:
            kind, payload = r.conn.recv()
        except (EOFError, OSError):
            r.conn.close()
            r.asked = True
            return
        if kind == "claim":
            self.pending[r.task.seq] = payload
        elif kind == "done":
            r.outcome = Outcome(**payload["outcome"])
            r.peak_rss, r.kernel_bytes = payload.get("peak_rss", 0), payload.get("kernel_bytes", 0)
            r.type_source = payload["outcome"].get("type_source", "")
            r.asked = True

    # -- identity questions, answered in package order
    def _answer(self) -> None:
        for seq in sorted(self.pending):
            if any(o.task.seq < seq and not o.asked for o in self.running.values()):
                return                  # an earlier package may still claim this kernel
            info = self.pending.pop(seq)
            r = self.running.get(seq)
            if r is None:
                continue
            r.asked = True
            try:
                r.conn.send(self._decide(r, info))
            except (BrokenPipeError, OSError):
                pass

    def _decide(self, r: _Running, info: dict) -> tuple:
        key = tuple(info["kernel"]) if info.get("kernel") else None
        db = info["db"]
        db_abs = os.path.abspath(os.path.join(self.hive, db))
        if key and key in self.claims:
            seq, primary, primary_db = self.claims[key]
            r.alias_of = seq
            return ("alias", primary, primary_db)
        existing = self.snap.by_kernel.get(key) if key else None
        if existing and os.path.abspath(existing) != db_abs:
            return ("alias", self._source_of(existing), os.path.relpath(existing, self.hive))
        if db in self.db_claims:
            _, other, other_key = self.db_claims[db]
            if other_key is None or other_key != key:
                return ("conflict", other, db)
        current = self.snap.meta.get(db_abs)
        if current is not None and (key is None or kernel_key(current) != key):
            other = self._source_of(db_abs)
            if other and other != r.task.pkg.rel:   # it would replace another package's DB
                return ("conflict", other, db)
        if key:
            self.claims[key] = (r.task.seq, r.task.pkg.rel, db)
        self.db_claims[db] = (r.task.seq, r.task.pkg.rel, key)
        r.kernel = (key, db)
        return ("build",)

    def _source_of(self, db_path: str) -> str:
        """The package of this hive a DB was built from ('' if none is there any more)."""
        meta = self.snap.meta.get(db_path, {})
        arch = os.path.relpath(db_path, self.hive).split(os.sep)[0]
        return self.by_source.get((arch, meta.get("distro", ""), meta.get("source_file", "")),
                                  "")

    # -- a child ended
    def _ended(self, r: _Running) -> None:
        r.proc.join()
        while not r.conn.closed and r.conn.poll():    # sent just before it exited
            self._message(r)
        r.conn.close()
        self.pending.pop(r.task.seq, None)
        outcome = r.outcome or self._crashed(r)
        if r.type_source == "dwarf" and outcome.status == records.BUILT:
            self.budget.learn(r.peak_rss, r.kernel_bytes)
        if outcome.status == records.ALIAS and r.alias_of is not None \
                and r.alias_of not in self.built:
            # its kernel is still being built (or failed meanwhile): said when that ends
            if any(o.task.seq == r.alias_of for o in self.running.values()):
                self.deferred.setdefault(r.alias_of, []).append((r.task, outcome))
                return
            self.queue.appendleft(_Task(r.task.pkg, r.task.sha, None))
            return
        self.done(outcome)
        if r.kernel:
            self._primary_ended(r, outcome.status == records.BUILT)

    def _primary_ended(self, r: _Running, built: bool) -> None:
        waiting = self.deferred.pop(r.task.seq, [])
        if built:
            self.built.add(r.task.seq)
            for _, outcome in waiting:
                self.done(outcome)
            return
        # the package that was to build this kernel failed: its aliases get their turn
        key, db = r.kernel
        if key and self.claims.get(key, (None,))[0] == r.task.seq:
            del self.claims[key]
        if self.db_claims.get(db, (None,))[0] == r.task.seq:
            del self.db_claims[db]
        for task, _ in reversed(waiting):
            self.queue.appendleft(_Task(task.pkg, task.sha, None))

    def _crashed(self, r: _Running) -> Outcome:
        code = r.proc.exitcode
        if code is not None and code < 0:
            reason = f"the build process was killed by {signal.Signals(-code).name}" + \
                (" (out of memory?)" if -code == signal.SIGKILL else "")
        else:
            reason = (f"the build process ended with exit code {code}: an internal error, "
                      f"see its traceback above")
        pkg = r.task.pkg
        rec = {"package": pkg.rel, "size": pkg.size, "mtime_ns": pkg.mtime_ns,
               "sha256": r.task.sha or "", "status": records.FAILED, "reason": reason,
               "exit_code": code, "builder_version": __version__, "at": records.now(),
               "seconds": round(time.monotonic() - r.started, 2), "run": self.run_id}
        if r.task.sha:                  # a record without the input's sha256 is no use
            records.write(pkg.record_path, rec)
        return Outcome.of(records.FAILED, rec)

    def stop(self) -> None:
        """Interrupted: each child removes its temp files on SIGTERM; wait for them."""
        for r in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        for r in self.running.values():
            r.proc.join(max(0.1, deadline - time.monotonic()))
            if r.proc.exitcode is None:
                r.proc.kill()
                r.proc.join()
        self.running.clear()


# ----------------------------------------------------------------------------- the child

class _Alias(Exception):
    """Raised out of build() by the identity hook: this kernel is built by another package."""

    def __init__(self, primary: str, db: str):
        super().__init__(primary)
        self.primary, self.db = primary, db


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _child(task: _Task, conn, opts: Options, hive: str, scratch: str, workers: int,
           by_sha: dict, run_id: str, parent_pid: int) -> None:
    procs.die_with_parent(parent_pid)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    sys.unraisablehook = lambda u: None if isinstance(u.exc_value, KeyboardInterrupt) else \
        sys.__unraisablehook__(u)
    try:
        status, rec, extra = _build_one(task, conn, opts, hive, scratch, workers, by_sha)
    except KeyboardInterrupt:
        os._exit(130)                   # no record: the package is simply not done
    rec["run"] = run_id
    if status != FAILED_EARLIER:
        records.write(task.pkg.record_path, rec)
    conn.send(("done", {"outcome": Outcome.of(status, rec).__dict__, **extra}))
    conn.close()


def _build_one(task: _Task, conn, opts: Options, hive: str, scratch: str, workers: int,
               by_sha: dict) -> tuple:
    from .. import build as buildmod, identity
    from ..archive.detect import detect_input
    t0 = time.monotonic()
    pkg = task.pkg
    rec = {"package": pkg.rel, "size": pkg.size, "mtime_ns": pkg.mtime_ns,
           "builder_version": __version__, "workers": workers}
    if opts.shard:
        rec["shard"] = f"{opts.shard[0]}/{opts.shard[1]}"
    kernel: dict = {}
    try:
        sha = task.sha or identity.file_sha256(pkg.path)
        rec["sha256"] = sha
        # its DB may be there: killed before the record was written, or only its C header
        # is missing (written from the DB, not rebuilt).  (The same bytes under another
        # name are an alias: their identity question says so.)
        db = by_sha.get(sha)
        meta = records.complete_db(db, sha) if db else None
        if meta and records.built_from(meta, pkg) and \
                records.outputs_complete(hive, meta, opts.with_btf):
            if opts.with_header:
                rec["head"] = _header_from_db(hive, db, meta)
            rec.update(_from_meta(meta, hive, db), status=records.BUILT, at=records.now(),
                       seconds=round(time.monotonic() - t0, 2))
            return SKIPPED, rec, {}
        if task.sha is None:
            # seen for the first time, or changed: it may have failed before with this
            # very content
            old = task.old
            if old and old.get("sha256") == sha and old.get("status") == records.FAILED \
                    and old.get("builder_version") == __version__ and not opts.retry_failed:
                old.update(size=pkg.size, mtime_ns=pkg.mtime_ns)
                records.write(pkg.record_path, old)
                return FAILED_EARLIER, old, {}
        kind = detect_input(pkg.path)
        arch = pkg.arch if kind in _KIND_NEEDS_ARCH else None
        with contextlib.ExitStack() as keep:
            def on_identity(meta: dict, kernel_path: str) -> None:
                kernel.update(meta)
                kernel["kernel_bytes"] = os.path.getsize(kernel_path)
                db = hivemod.db_path(hive, meta["arch"], pkg.distro, meta["release"],
                                     meta["flavour"])
                conn.send(("claim", {"kernel": kernel_key(meta),
                                     "db": os.path.relpath(db, hive)}))
                answer = conn.recv()
                if answer[0] == "alias":
                    raise _Alias(answer[1], answer[2])
                if answer[0] == "conflict":
                    raise BuildError(f"{pkg.rel}: kernel {meta['release']} "
                                     f"(build-id {meta.get('build_id') or '-'}) would replace "
                                     f"the DB {answer[2]} of another kernel of the same "
                                     f"release, built from {answer[1]}; not built")
                if opts.keep_vmlinux and kernel_path != pkg.path and kind in ("rpm", "deb"):
                    _keep_vmlinux(keep, kernel_path, hive, meta)

            extra = {"with_btf": True} if opts.with_btf else {}
            if opts.with_header:
                extra["with_header"] = True
            res = buildmod.build(pkg.path, hive=hive, distro=pkg.distro, progress=False,
                                 jobs=workers, workdir=scratch, arch=arch,
                                 source_sha256=sha, on_identity=on_identity, **extra)
            if opts.with_header:
                rec["head"] = os.path.relpath(records.head_of(hive, res.meta), hive)
    except _Alias as a:
        rec.update(_from_meta(kernel, hive, None), status=records.ALIAS, alias_of=a.primary,
                   db=a.db, at=records.now(), seconds=round(time.monotonic() - t0, 2))
        return records.ALIAS, rec, {}
    except DbhiveError as e:
        rec.update(_from_meta(kernel, hive, None) if kernel else {})
        # named by its place in the hive: the hive may be mounted elsewhere next time
        rec.update(status=records.FAILED, reason=str(e).replace(pkg.path, pkg.rel),
                   exit_code=e.exit_code,
                   at=records.now(), seconds=round(time.monotonic() - t0, 2))
        rec.setdefault("sha256", "")
        return records.FAILED, rec, {}
    peak = _peak_rss(workers)
    rec.update(_from_meta(res.meta, hive, res.db), status=records.BUILT, at=records.now(),
               seconds=round(time.monotonic() - t0, 2), peak_rss=peak,
               kernel_bytes=kernel.get("kernel_bytes", 0))
    return records.BUILT, rec, {"peak_rss": peak, "kernel_bytes": kernel.get("kernel_bytes", 0)}


_META_KEYS = ("release", "arch", "build_id", "flavour", "type_source", "types", "structs",
              "functions", "btf_sha256", "source_kind")


def _from_meta(meta: dict, hive: str, db: Optional[str]) -> dict:
    out = {k: meta[k] for k in _META_KEYS if meta.get(k) not in (None, "")}
    if db:
        out["db"] = os.path.relpath(db, hive)
        st = os.stat(db)
        out.update(db_size=st.st_size, db_mtime_ns=st.st_mtime_ns)
    return out


def _header_from_db(hive: str, db: str, meta: dict) -> str:
    """The kernel's C header, written from its DB unless the one there is current."""
    from .. import cheader, store
    dest = records.head_of(hive, meta)
    if not cheader.is_current(dest, meta):
        cheader.write(store.load_graph(db), meta, dest, os.path.relpath(db, hive))
    return os.path.relpath(dest, hive)


def _peak_rss(workers: int) -> int:
    """Peak memory of this build's process tree, from above: this process's peak plus
    `workers` times the largest DWARF worker's (they peak at about the same time)."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return me + (workers * kids if workers > 1 else 0)


def _keep_vmlinux(stack: contextlib.ExitStack, kernel_path: str, hive: str, meta: dict) -> None:
    """--keep-vmlinux: the extracted vmlinux goes to <hive>/<arch>/vmlinux/vmlinux-<release>,
    renamed into place only when the build succeeds (the ExitStack closes cleanly)."""
    dest = os.path.join(hive, hivemod.safe_component(meta["arch"], "arch"), "vmlinux",
                        "vmlinux-" + hivemod.kernel_key(meta["release"], meta["flavour"]))
    tmp = stack.enter_context(output.atomic_path(dest, mode=0o644))
    os.unlink(tmp)
    try:
        os.link(kernel_path, tmp)       # same filesystem: no copy
    except OSError:
        shutil.copyfile(kernel_path, tmp)
