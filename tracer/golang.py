"""Go processes: found in /proc (any mount or PID namespace: binaries are opened through
/proc/PID/root, maps are keyed by the host pid), analysed once per file identity, described
in proc_info_map, and probed with plain uprobes on the entry and on every RET of
crypto/tls.(*Conn).Write and .Read (never uretprobes: Go moves goroutine stacks).

Probes are per binary (a uprobe sits on the file's inode and fires in every process that maps
it); they are detached when no followed process of that binary has been left for LINGER_S
seconds (short-lived processes of one binary come and go without re-attaching: removing a
uprobe costs the kernel an RCU grace period, ~0.1 s each on 6.18), by a background thread so
that following goes on meanwhile.
"""
from __future__ import annotations

import hashlib
import itertools
import os
import queue
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from . import bpf as B
from . import fields as F

Identity = Tuple[int, int, int, int]       # st_dev, st_ino, st_size, st_mtime_ns
CACHE_MAX = 1024
LINGER_S = 3.0
# Go's linux/amd64 TLS slot for g (runtime.tlsg): g is at -8 from the FS base, in every
# release (the linker rewrites TLS accesses to -8(FS)).
AMD64_G_TLS = -8

GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}
# pclntab magics of releases that all use the register ABI (1.18+: 0xfffffff0, 0xfffffff1)
_REGABI_MAGICS = (0xFFFFFFF0, 0xFFFFFFF1)


@dataclass
class Analysis:
    """What one Go executable (one file identity) needs, or why it cannot be followed."""
    identity: Identity
    path: str
    error: Optional[str] = None             # not Go, or not followable
    version: Optional[str] = None
    version_code: int = 0
    flags: int = 0
    offsets: List[int] = field(default_factory=list)
    offset_sources: Dict[str, str] = field(default_factory=dict)
    itabs: List[Optional[int]] = field(default_factory=list)    # link-time addresses
    pie: bool = False
    anchor: Optional[Tuple[int, int]] = None   # (vaddr, file offset) of a probed function
    probes: List[Tuple[str, int]] = field(default_factory=list)   # (program, file offset)
    warnings: List[str] = field(default_factory=list)
    crashed: bool = False                    # the analysis raised: worth telling the user

    @property
    def ok(self) -> bool:
        return self.error is None


def abi_flags(machine: str, version: Optional[tuple]) -> int:
    """proc_info_map flags for a Go release: amd64 before 1.17 passes arguments on the stack
    and keeps g in TLS; arm64 before 1.18 passes arguments on the stack (g is always x28)."""
    from resolver.golang import quirks
    if version is None or machine not in quirks.REGISTER_ABI_SINCE or \
            quirks.register_abi(machine, version):
        return 0
    if machine in quirks.G_IN_TLS_BEFORE_REGISTER_ABI:
        return F.GO_G_TLS | F.GO_STACK_ABI
    return F.GO_STACK_ABI


def analyze(path: str, identity: Identity, machine: str) -> Analysis:
    """The resolver's report on one binary, turned into what proc_info_map and the probes
    need."""
    from resolver.golang import NotGoBinary, analyze_go_binary
    try:
        rep = analyze_go_binary(path, symbols=list(B.GO_FUNCS), offsets=list(F.go_offset_keys()),
                                itabs=list(F.go_itab_keys()))
    except NotGoBinary as e:
        return Analysis(identity, path, error=str(e) or "not a Go binary")
    except (OSError, ValueError) as e:      # ElfError is a ValueError: not an ELF we can read
        return Analysis(identity, path, error=f"{path}: {e}")
    except Exception as e:
        # A binary the resolver cannot read (truncated, being written, unknown layout) must
        # not stop the tracer following every other process: it is reported, not followed.
        return Analysis(identity, path, error=f"{path}: the Go analysis failed: "
                                              f"{type(e).__name__}: {e}", crashed=True)
    a = Analysis(identity, path, version=rep.version, pie=rep.pie, warnings=list(rep.warnings))
    if rep.arch != GO_ARCH.get(machine):
        a.error = f"{path}: a {rep.arch} binary on {machine}"
        return a
    vt = rep.version_tuple
    if vt is None and rep.pclntab.get("magic") in _REGABI_MAGICS:
        vt = (1, 18, 0)
        a.warnings.append("Go version unknown: register ABI assumed from the pclntab (1.18+)")
    if vt is None:
        a.error = f"{path}: Go version unknown, so is its calling convention"
        return a
    a.version_code = F.go_version_code(rep.version_tuple or vt)
    a.flags = abi_flags(machine, tuple(vt))
    for key in F.go_offset_keys():
        o = rep.offsets.get(key) or {}
        off, src = o.get("offset"), o.get("source", "unknown")
        if off is None and key in F.GO_FIRST_FIELDS:
            off, src = 0, "go: first field"
        a.offsets.append(F.GO_UNKNOWN if off is None else int(off))
        a.offset_sources[key] = src
    a.itabs = [rep.itabs.get(k) for k in F.go_itab_keys()]
    for fname, (entry_prog, ret_prog) in B.GO_FUNCS.items():
        sym = rep.symbols.get(fname)
        if not sym:
            a.warnings.append(f"{fname} not in the binary")
            continue
        if sym.get("returns") is None:
            a.warnings.append(f"{fname}: RET offsets unknown, not probed (never a uretprobe)")
            continue
        a.anchor = a.anchor or (sym["address"], sym["file_offset"])
        a.probes.append((entry_prog, sym["file_offset"]))
        a.probes += [(ret_prog, r) for r in sym["returns"]]
    if not a.probes:
        a.error = f"{path}: no crypto/tls.(*Conn).Write/Read to probe"
    return a


# ---- /proc ----------------------------------------------------------------------------------

def exe_path(pid: int) -> Optional[str]:
    """The executable of pid as the tracer can open it: through the process's own root (its
    mount namespace), else the /proc/PID/exe link itself (a deleted file)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
    path = f"/proc/{pid}/root{exe}"
    if exe.endswith(" (deleted)") or not os.path.exists(path):
        path = f"/proc/{pid}/exe"
    return path


def identity(pid: int) -> Optional[Identity]:
    try:
        st = os.stat(f"/proc/{pid}/exe")
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def start_time(pid: int) -> Optional[int]:
    """Field 22 of /proc/PID/stat: tells a process from a later one with the same pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read(4096)
    except OSError:
        return None
    try:
        return int(raw[raw.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def is_process(pid: int) -> bool:
    """pid is a thread-group leader (a process), not a thread."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("Tgid:"):
                    return int(line.split()[1]) == pid
    except (OSError, ValueError):
        pass
    return False


def load_bias(pid: int, a: Analysis) -> Optional[int]:
    """Where a PIE binary is loaded in pid: from /proc/PID/maps, the mapping that holds the
    probed function's file offset (one bias for every segment of an executable)."""
    if not a.pie:
        return 0
    if a.anchor is None:
        return None
    from resolver.golang import NotGoBinary, process_maps
    vaddr, foff = a.anchor
    try:
        maps = process_maps(pid)
    except NotGoBinary:             # the process is gone
        return None
    for m in maps:
        if m["path"] and "x" in m["perms"] and m["offset"] <= foff < m["offset"] + (
                m["end"] - m["start"]):
            return m["start"] + (foff - m["offset"]) - vaddr
    return None


def children(pid: int) -> List[int]:
    """Child processes of pid (CONFIG_PROC_CHILDREN; empty where the kernel lacks it)."""
    out: List[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(x) for x in fh.read().split()]
        except (OSError, ValueError):
            pass
    return out


def pids() -> List[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


# ---- following ----------------------------------------------------------------------------

@dataclass
class Binary:
    analysis: Analysis
    events: List[bytes]          # uprobe event names attached
    pids: Set[int] = field(default_factory=set)
    idle_since: Optional[float] = None       # when its last process went


class Detacher:
    """Closes uprobe perf events off the main loop (each close waits for the kernel)."""

    def __init__(self):
        self.q: "queue.Queue" = queue.Queue()
        self._busy = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="uprobe-detach", daemon=True)
        self._thread.start()

    def put(self, items: List[Tuple[bytes, int]]) -> None:
        with self._lock:
            self._busy += len(items)
        for it in items:
            self.q.put(it)

    @property
    def pending(self) -> int:
        with self._lock:
            return self._busy

    def _run(self) -> None:
        import bcc
        while True:
            ev, fd = self.q.get()
            try:
                bcc.lib.bpf_close_perf_event_fd(fd)
                bcc.lib.bpf_detach_uprobe(ev)        # the tracefs event (kernels < 4.17)
            finally:
                with self._lock:
                    self._busy -= 1

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self.pending


@dataclass
class Proc:
    pid: int
    identity: Identity
    started: Optional[int]


class GoFollower:
    """Keeps proc_info_map and the uprobes in step with the Go processes on the machine."""

    def __init__(self, b, machine: str, delay: float = 60.0, only: Optional[Iterable[int]] = None,
                 notify: Optional[Callable[[dict], None]] = None,
                 log: Optional[Callable[[str], None]] = None, tls_g: bool = True):
        self.b = b
        self.machine = machine
        self.delay = delay
        self.only: Optional[Set[int]] = set(only) if only is not None else None
        self.notify = notify or (lambda ev: None)
        self.log = log or (lambda msg: None)
        self.tls_g = tls_g            # False: Go < 1.17 amd64 cannot be followed (no fsbase)
        self.cache: "OrderedDict[Identity, Analysis]" = OrderedDict()
        self.analyses = 0             # how many binaries were analysed (cache misses)
        self.binaries: Dict[Identity, Binary] = {}
        self.procs: Dict[int, Proc] = {}
        self.pending: Dict[int, float] = {}
        self._last_reconcile = time.monotonic()
        self._gen = itertools.count(1)
        self.detacher = Detacher()

    # -- analysis, cached by file identity
    def analysis(self, pid: int, ident: Identity) -> Tuple[Optional[Analysis], bool]:
        """(the analysis of pid's binary or None, whether it came from the cache)."""
        a = self.cache.get(ident)
        if a is not None:
            self.cache.move_to_end(ident)
            return a, True
        path = exe_path(pid)
        if path is None:
            return None, False
        a = analyze(path, ident, self.machine)
        self.analyses += 1
        if a.crashed:
            self.log(f"pid {pid}: {a.error}")
        self.cache[ident] = a
        while len(self.cache) > CACHE_MAX:
            self.cache.popitem(last=False)
        return a, False

    def proc_info(self, pid: int, a: Analysis) -> Optional[F.GoProcInfo]:
        bias = load_bias(pid, a)
        if bias is None:
            return None
        itabs = [(x + bias) if x else 0 for x in a.itabs]
        return F.GoProcInfo(a.version_code, a.flags, AMD64_G_TLS if self.machine == "x86_64" else 0,
                            list(a.offsets), itabs)

    # -- one process
    def add(self, pid: int) -> bool:
        """Follow pid if it runs a Go binary; True when it is followed afterwards."""
        if pid in self.procs:
            return True
        if pid == os.getpid() or (self.only is not None and pid not in self.only):
            return False
        ident = identity(pid)
        if ident is None:
            return False
        a, cached = self.analysis(pid, ident)
        if a is None or not a.ok:
            return False
        if a.flags & F.GO_G_TLS and not self.tls_g:
            self.log(f"pid {pid}: {a.version} keeps g in TLS and task_struct.thread.fsbase is "
                     f"absent: not followed")
            return False
        info = self.proc_info(pid, a)
        if info is None:
            return False
        started = start_time(pid)
        try:
            B.put_proc_info(self.b, pid, info.pack())
        except Exception as e:                    # bcc: "Could not update table" (map full)
            self.log(f"pid {pid}: proc_info_map update failed: {e}")
            return False
        binary = self.binaries.get(ident)
        if binary is not None:
            binary.idle_since = None
        else:
            # Attach through an fd of the file itself: the kernel resolves the path at attach
            # time, and /proc/self/fd/N stays valid if pid exits meanwhile.
            path = exe_path(pid)
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if path else -1
            except OSError:
                fd = -1
            if fd < 0:                            # it exited meanwhile
                B.del_proc_info(self.b, pid)
                return False
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != ident:
                    raise OSError("the file changed since it was analysed")
                events = self._attach(f"/proc/self/fd/{fd}", a)
            except OSError as e:
                B.del_proc_info(self.b, pid)
                self.log(f"pid {pid}: attaching uprobes to {path} failed: {e}")
                return False
            finally:
                os.close(fd)
            binary = self.binaries[ident] = Binary(a, events)
        binary.pids.add(pid)
        self.procs[pid] = Proc(pid, ident, started)
        self.notify({"event": "go_attach", "pid": pid, "binary": a.path, "version": a.version,
                     "uprobes": len(binary.events), "new_binary": len(binary.pids) == 1,
                     "analysed": not cached})
        # children forked (without exec) before this process was followed: the fork
        # tracepoint reported them while pid was not in proc_info_map yet
        for child in children(pid):
            if child not in self.procs and identity(child) == ident and is_process(child):
                if self.only is not None:
                    self.only.add(child)
                self.add(child)
        return True

    def remove(self, pid: int, why: str = "exit") -> None:
        self.pending.pop(pid, None)
        p = self.procs.pop(pid, None)
        if p is None:
            return
        B.del_proc_info(self.b, pid)
        binary = self.binaries.get(p.identity)
        if binary is None:
            return
        binary.pids.discard(pid)
        if not binary.pids:
            binary.idle_since = time.monotonic()
        self.notify({"event": "go_detach", "pid": pid, "why": why,
                     "last_of_binary": not binary.pids})

    # -- uprobes
    def _attach(self, path: str, a: Analysis) -> List[bytes]:
        import bcc
        tag = hashlib.sha1(repr(a.identity).encode()).hexdigest()[:8]
        gen = next(self._gen)           # a re-attach never reuses a name still being removed
        names: List[bytes] = []
        try:
            for prog, off in a.probes:
                fn = B.load(self.b, prog)
                ev = f"dbh_{tag}_{gen}_{off:x}".encode()
                fd = bcc.lib.bpf_attach_uprobe(fn.fd, 0, ev, path.encode(), off, -1)
                if fd < 0:
                    raise OSError(f"uprobe at file offset {off:#x} ({prog})")
                self.b._add_uprobe_fd(ev, fd)
                names.append(ev)
        except Exception:
            for ev in names:
                self.b.detach_uprobe_event(ev)
            raise
        return names

    def _detach(self, binary: Binary) -> int:
        """Hand the binary's uprobes to the detacher; how many."""
        items = []
        for ev in binary.events:
            fd = self.b.uprobe_fds.get(ev)
            if fd is not None:
                self.b._del_uprobe_fd(ev)
                items.append((ev, fd))
        binary.events = []
        self.detacher.put(items)
        return len(items)

    def detach_idle(self, now: float, linger: float = LINGER_S) -> None:
        for ident, binary in list(self.binaries.items()):
            if binary.idle_since is not None and now - binary.idle_since >= linger:
                n = self._detach(binary)
                del self.binaries[ident]
                self.notify({"event": "go_uprobes_detached", "binary": binary.analysis.path,
                             "uprobes": n})

    # -- events from the BPF side
    def on_exec(self, pid: int) -> None:
        if pid in self.procs:
            self.remove(pid, "exec")
        if self.only is None or pid in self.only:
            self.pending[pid] = time.monotonic() + self.delay

    def on_fork(self, parent: int, child: int) -> None:
        """A followed process forked: the child (a process, not a thread) runs the same
        binary with its runtime already started, so it is followed at the next tick."""
        if parent in self.procs and is_process(child):
            if self.only is not None:
                self.only.add(child)
            self.pending[child] = time.monotonic()

    def on_exit(self, pid: int) -> None:
        self.pending.pop(pid, None)
        if pid in self.procs:
            self.remove(pid, "exit")

    # -- periodic work
    def scan(self) -> None:
        """Every running process (or the --pid ones, saying why one is not followed)."""
        if self.only is None:
            for pid in pids():
                self.add(pid)
            return
        for pid in sorted(self.only):
            if not self.add(pid):
                ident = identity(pid)
                a = self.cache.get(ident) if ident else None
                if ident is not None:
                    why = a.error if a is not None and a.error else "see above"
                elif os.path.isdir(f"/proc/{pid}"):
                    why = "its executable cannot be read (a kernel thread?)"
                else:
                    why = "no such process"
                self.log(f"pid {pid}: not followed ({why})")

    def tick(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        for pid, due in list(self.pending.items()):
            if due <= now:
                del self.pending[pid]
                self.add(pid)
        if now - self._last_reconcile >= 2.0:
            self._last_reconcile = now
            self.reconcile()
        self.detach_idle(now)

    def reconcile(self) -> None:
        """Drop processes that are gone (an exit event lost, or a pid reused)."""
        for pid, p in list(self.procs.items()):
            if start_time(pid) != p.started or identity(pid) != p.identity:
                self.remove(pid, "gone")

    def close(self, timeout: float = 600.0) -> None:
        """Stop following: every map entry and uprobe removed (waits for the detacher)."""
        for pid in list(self.procs):
            self.remove(pid, "stop")
        self.pending.clear()
        self.detach_idle(float("inf"), linger=0)
        self.detacher.wait(timeout)

    def counts(self) -> dict:
        return {"processes": len(self.procs), "binaries": len(self.binaries),
                "uprobes": sum(len(b.events) for b in self.binaries.values()),
                "detaching": self.detacher.pending, "analyses": self.analyses}
