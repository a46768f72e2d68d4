"""Go processes: found in /proc (any mount or PID namespace: binaries are opened through
/proc/PID/root, maps are keyed by the host pid), analysed once per file identity, described
in proc_info_map, and probed with plain uprobes on the entry and on every RET of
crypto/tls.(*Conn).Write and .Read (never uretprobes: Go moves goroutine stacks).

Probes are per binary (a uprobe sits on the file's inode and fires in every process that maps
it); they are detached when the last followed process of that binary is gone.
"""
from __future__ import annotations

import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

from . import bpf as B
from . import fields as F

Identity = Tuple[int, int, int, int]       # st_dev, st_ino, st_size, st_mtime_ns
CACHE_MAX = 1024
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

    @property
    def ok(self) -> bool:
        return self.error is None


def abi_flags(machine: str, version: Optional[tuple]) -> int:
    """proc_info_map flags for a Go release: amd64 before 1.17 passes arguments on the stack
    and keeps g in TLS; arm64 before 1.18 passes arguments on the stack (g is always x28)."""
    if version is None:
        return 0
    if machine == "x86_64" and version < (1, 17):
        return F.GO_G_TLS | F.GO_STACK_ABI
    if machine == "aarch64" and version < (1, 18):
        return F.GO_STACK_ABI
    return 0


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
    vaddr, foff = a.anchor
    try:
        with open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) < 6:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                off = int(parts[2], 16)
                if "x" in parts[1] and off <= foff < off + (hi - lo):
                    return lo + (foff - off) - vaddr
    except OSError:
        return None
    return None


def pids() -> List[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


# ---- following ----------------------------------------------------------------------------

@dataclass
class Binary:
    analysis: Analysis
    events: List[bytes]          # uprobe event names attached
    pids: Set[int] = field(default_factory=set)


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

    # -- analysis, cached by file identity
    def analysis(self, pid: int, ident: Identity) -> Optional[Analysis]:
        a = self.cache.get(ident)
        if a is not None:
            self.cache.move_to_end(ident)
            return a
        path = exe_path(pid)
        if path is None:
            return None
        a = analyze(path, ident, self.machine)
        self.analyses += 1
        self.cache[ident] = a
        while len(self.cache) > CACHE_MAX:
            self.cache.popitem(last=False)
        return a

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
        a = self.analysis(pid, ident)
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
        B.put_proc_info(self.b, pid, info.pack())
        binary = self.binaries.get(ident)
        if binary is None:
            path = exe_path(pid)
            try:
                events = self._attach(path, a)
            except OSError as e:
                B.del_proc_info(self.b, pid)
                self.log(f"pid {pid}: attaching uprobes to {path} failed: {e}")
                return False
            binary = self.binaries[ident] = Binary(a, events)
        binary.pids.add(pid)
        self.procs[pid] = Proc(pid, ident, started)
        self.notify({"event": "go_attach", "pid": pid, "binary": a.path, "version": a.version,
                     "uprobes": len(binary.events), "new_binary": len(binary.pids) == 1})
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
        detached = 0
        if not binary.pids:
            detached = self._detach(binary)
            del self.binaries[p.identity]
        self.notify({"event": "go_detach", "pid": pid, "why": why, "uprobes_detached": detached})

    # -- uprobes
    def _attach(self, path: str, a: Analysis) -> List[bytes]:
        import bcc
        tag = hashlib.sha1(repr(a.identity).encode()).hexdigest()[:8]
        names: List[bytes] = []
        try:
            for prog, off in a.probes:
                fn = self.b.load_func(prog.encode(), bcc.BPF.KPROBE)
                ev = f"dbh_{tag}_{off:x}".encode()
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
        n = 0
        for ev in binary.events:
            if ev in self.b.uprobe_fds:
                self.b.detach_uprobe_event(ev)
                n += 1
        binary.events = []
        return n

    # -- events from the BPF side
    def on_exec(self, pid: int) -> None:
        if pid in self.procs:
            self.remove(pid, "exec")
        if self.only is None or pid in self.only:
            self.pending[pid] = time.monotonic() + self.delay

    def on_fork(self, parent: int, child: int) -> None:
        if parent in self.procs and is_process(child):
            if self.only is not None:
                self.only.add(child)
            self.add(child)

    def on_exit(self, pid: int) -> None:
        self.pending.pop(pid, None)
        if pid in self.procs:
            self.remove(pid, "exit")

    # -- periodic work
    def scan(self) -> None:
        """Every running process (or the --pid ones)."""
        for pid in (sorted(self.only) if self.only is not None else pids()):
            self.add(pid)

    def tick(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        for pid, due in list(self.pending.items()):
            if due <= now:
                del self.pending[pid]
                self.add(pid)
        if now - self._last_reconcile >= 2.0:
            self._last_reconcile = now
            self.reconcile()

    def reconcile(self) -> None:
        """Drop processes that are gone (an exit event lost, or a pid reused)."""
        for pid, p in list(self.procs.items()):
            if start_time(pid) != p.started or identity(pid) != p.identity:
                self.remove(pid, "gone")

    def close(self) -> None:
        for pid in list(self.procs):
            self.remove(pid, "stop")
        self.pending.clear()

    def counts(self) -> dict:
        return {"processes": len(self.procs), "binaries": len(self.binaries),
                "uprobes": sum(len(b.events) for b in self.binaries.values()),
                "analyses": self.analyses}
