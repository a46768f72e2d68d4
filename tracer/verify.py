"""`tracer verify`: prove on the live kernel that the offsets in members_offset are right.

With the offsets in the map, verify_probe (a classic tracepoint on pwrite64) walks
current->files->fdt->fd[fd] for file descriptors this process opened itself and records what
the offsets give: the socket's family, addresses, ports, state, type, protocol, ipv6only,
copied_seq/write_seq; a file's name, its parent's name, i_mode, s_dev, mount id, mount
namespace and f_pos; the task's state and FS base.  Each value is compared with what user
space knows (getsockname, TCP_REPAIR's queue sequence numbers, fstat, /proc/self/fdinfo and
mountinfo, /proc/kallsyms, arch_prctl).  With a Go test program (data/go-src/tracerprobe),
its goroutine id, fd and byte counts are read through proc_info_map by the same uprobes
`tracer start` uses, and compared with what the program prints.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import termios
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from . import bpf as B
from . import fields as F
from .kernel import Running, TracerError
from .offsets import Source, Value, members_words, resolve_all

TCP_REPAIR, TCP_REPAIR_QUEUE, TCP_QUEUE_SEQ = 19, 20, 21
TCP_RECV_QUEUE, TCP_SEND_QUEUE = 1, 2
TCP_ESTABLISHED, TCP_LISTEN = 1, 10
ARCH_GET_FS = 0x1003
SYS_ARCH_PRCTL_X86_64 = 158
STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
          6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
          11: "CLOSING", 12: "NEW_SYN_RECV"}


@dataclass
class Check:
    field: str
    expected: Any
    read: Any
    ok: bool
    note: str = ""

    def as_dict(self) -> dict:
        d = {"field": self.field, "expected": self.expected, "read": self.read, "ok": self.ok}
        if self.note:
            d["note"] = self.note
        return d


@dataclass
class Result:
    kernel: dict
    source: str
    origin: str
    checks: List[Check] = field(default_factory=list)
    skipped: List[dict] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def as_dict(self) -> dict:
        return {"kernel": self.kernel, "source": self.source, "origin": self.origin,
                "checks": [c.as_dict() for c in self.checks], "ok": self.ok,
                "skipped": self.skipped, "warnings": self.warnings, "timings": self.timings}


def kernel_dev(st_dev: int) -> int:
    """The kernel's dev_t (MKDEV: major << 20 | minor) of a stat() st_dev."""
    return (os.major(st_dev) << 20) | os.minor(st_dev)


def ip4(v: int) -> str:
    return socket.inet_ntoa(struct.pack("<I", v & 0xFFFFFFFF))


def ip6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, bytes(raw))


def fdinfo_mnt_id(fd: int) -> Optional[int]:
    with open(f"/proc/self/fdinfo/{fd}") as fh:
        for line in fh:
            if line.startswith("mnt_id:"):
                return int(line.split()[1])
    return None


def mountinfo_ids() -> Dict[int, str]:
    out = {}
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            out[int(parts[0])] = parts[2]          # mount id -> major:minor
    return out


def kallsyms(name: str) -> Optional[int]:
    try:
        with open("/proc/kallsyms") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name:
                    addr = int(parts[0], 16)
                    return addr or None            # 0: hidden by kptr_restrict
    except OSError:
        pass
    return None


def fs_base() -> Optional[int]:
    """This thread's FS base (x86_64 arch_prctl(ARCH_GET_FS))."""
    if os.uname().machine != "x86_64":
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    out = ctypes.c_ulong(0)
    if libc.syscall(SYS_ARCH_PRCTL_X86_64, ARCH_GET_FS, ctypes.byref(out)) != 0:
        return None
    return out.value


def queue_seq(s: socket.socket, queue: int) -> Optional[int]:
    """TCP_REPAIR's view of a socket's sequence numbers: write_seq (send queue) or rcv_nxt
    (receive queue).  None without CAP_NET_ADMIN."""
    try:
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    except OSError:
        return None
    try:
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        return s.getsockopt(socket.IPPROTO_TCP, TCP_QUEUE_SEQ) & 0xFFFFFFFF
    finally:
        s.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 0)


def inq(s: socket.socket) -> int:
    buf = fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", buf)[0]


class Verifier:
    def __init__(self, src: Source, k: Running, go_probe: Optional[str] = None,
                 timeout: float = 5.0, log=None):
        self.src, self.k = src, k
        self.go_probe = go_probe
        self.timeout = timeout
        self.log = log or (lambda m: None)
        self.values: Dict[str, Value] = {}
        self.result = Result({"release": k.release, "arch": k.machine, "build_id": k.build_id},
                             src.json_source, src.label, warnings=list(src.warnings))
        self.b = None

    # -- plumbing
    def add(self, name: str, expected, read, ok: Optional[bool] = None, note: str = "") -> None:
        if ok is None:
            ok = expected == read
        self.result.checks.append(Check(name, expected, read, bool(ok), note))

    def skip(self, name: str, reason: str) -> None:
        self.result.skipped.append({"field": name, "reason": reason})

    def absent(self, *members: str) -> Optional[str]:
        """Why one of these members_offset fields has no value, or None."""
        for m in members:
            v = self.values.get(m)
            if v is not None and not v.ok:
                return f"{m}: {v.absent}"
        return None

    def probe(self, fd: int):
        """Make verify_probe walk fd now (pwrite64 of 0 bytes); its record."""
        table = self.b[b"verify_out"]
        before = table[table.Key(0)].seq
        B.set_config(self.b, verify_tgid=os.getpid(), verify_fd=fd)
        try:
            os.pwrite(fd, b"", 0)
        except OSError as e:
            if e.errno not in (errno.ESPIPE, errno.EINVAL, errno.EBADF):
                raise
        B.set_config(self.b, verify_tgid=0)
        rec = table[table.Key(0)]
        if rec.seq == before:
            raise TracerError("tracer: verify_probe did not run (is the tracepoint "
                              "syscalls:sys_enter_pwrite64 available?)", 4)
        return rec

    def check_field(self, label: str, member: str, expected, read, fmt=lambda x: x) -> None:
        why = self.absent(member)
        if why:
            self.add(label, fmt(expected), "absent", False, why)
        else:
            self.add(label, fmt(expected), fmt(read))

    # -- the run
    def run(self) -> Result:
        t0 = time.monotonic()
        vals = resolve_all(self.src.resolver, self.k.machine)
        self.values = {v.member.name: v for v in vals}
        raw = F.pack_members(members_words(vals))
        t1 = time.monotonic()
        self.b = B.compile_program(self.k.machine)
        t2 = time.monotonic()
        self.result.timings.update(resolve_s=round(t1 - t0, 3), compile_s=round(t2 - t1, 3))
        try:
            for rep in B.check_all(self.b):
                self.add(f"bpf:{rep.program}", f"<= {B.MAX_INSNS_414} insns, 4.14 helpers, "
                         f"no loops", f"{rep.insns} insns" + (f"; {'; '.join(rep.problems)}"
                                                               if rep.problems else ""), rep.ok)
            B.fill_members(self.b, raw)
            per_cpu = B.read_members(self.b)
            self.add("members_offset (every CPU, ready=1)", f"{len(per_cpu)} x {len(raw)} bytes",
                     f"{sum(1 for x in per_cpu if x == raw)} equal", all(x == raw for x in per_cpu))
            B.attach_tracepoint(self.b, "verify_probe")
            t3 = time.monotonic()
            self.task_checks()
            self.file_checks()
            self.socket_checks()
            t4 = time.monotonic()
            self.result.timings["kernel_checks_s"] = round(t4 - t3, 3)
            if self.go_probe:
                self.go_checks()
                self.result.timings["go_checks_s"] = round(time.monotonic() - t4, 3)
            else:
                self.skip("go:*", "no Go test program (--go-probe PATH; see data/go-src/tracerprobe)")
        finally:
            B.clear_maps(self.b)
            self.b.cleanup()
        self.result.timings["total_s"] = round(time.monotonic() - t0, 3)
        return self.result

    # -- kernel checks
    def task_checks(self) -> None:
        d = tempfile.mkdtemp(prefix="tracer-verify-")
        try:
            fd = os.open(os.path.join(d, "task"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                rec = self.probe(fd)
                self.check_field("task_struct.__state|state (running)", "task_state", 0,
                                 rec.task_state)
                base = fs_base()
                if self.k.machine != "x86_64":
                    self.skip("task_struct.thread.fsbase", f"not used on {self.k.machine}")
                elif base is None:
                    self.skip("task_struct.thread.fsbase", "arch_prctl(ARCH_GET_FS) failed")
                else:
                    self.check_field("task_struct.thread.fsbase", "task_fsbase", base,
                                     rec.fsbase, hex)
            finally:
                os.close(fd)
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def file_checks(self) -> None:
        d = tempfile.mkdtemp(prefix="tracer-verify-")
        name = f"probe-{os.getpid()}-{os.urandom(3).hex()}.dat"
        path = os.path.join(d, name)
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o640)
        try:
            os.write(fd, os.urandom(1234))
            os.lseek(fd, 777, os.SEEK_SET)
            rec = self.probe(fd)
            st = os.fstat(fd)
            self.add("file (fd table walk)", "a struct file *", hex(rec.file) if rec.file else 0,
                     bool(rec.file), "task_struct.files, files_struct.fdt, fdtable.fd")
            self.check_field("dentry.d_name.name", "dentry_name", name, rec.name.decode(
                "utf-8", "replace"))
            self.check_field("dentry.d_parent -> d_name", "dentry_parent", os.path.basename(d),
                             rec.parent.decode("utf-8", "replace"))
            self.check_field("inode.i_mode", "inode_i_mode", st.st_mode, rec.i_mode, oct)
            self.check_field("super_block.s_dev", "sb_s_dev",
                             f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}",
                             f"{rec.s_dev >> 20}:{rec.s_dev & 0xFFFFF}")
            self.check_field("file.f_pos", "file_f_pos", 777, rec.f_pos)
            mnt_id = fdinfo_mnt_id(fd)
            ids = mountinfo_ids()
            note = ""
            if mnt_id in ids:
                note = f"mountinfo: {mnt_id} is {ids[mnt_id]}"
                if ids[mnt_id] != f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}":
                    note += " (not the file's device: btrfs subvolume or bind mount)"
            why = self.absent("file_mnt", "mount_mnt", "mount_mnt_id")
            if why:
                self.add("mount.mnt_id (container_of file.f_path.mnt)", mnt_id, "absent", False,
                         why)
            else:
                self.add("mount.mnt_id (container_of file.f_path.mnt)", mnt_id, rec.mnt_id,
                         mnt_id == rec.mnt_id and mnt_id in ids, note)
            ns = os.stat("/proc/self/ns/mnt").st_ino
            why = self.absent("file_mnt", "mount_mnt", "mount_mnt_ns", "mnt_ns_inum")
            self.add("mnt_namespace.ns.inum", ns, "absent" if why else rec.mnt_ns_inum,
                     not why and ns == rec.mnt_ns_inum, why or "")
        finally:
            os.close(fd)
            shutil.rmtree(d, ignore_errors=True)

    def socket_checks(self) -> None:
        self.tcp_pair(socket.AF_INET, "127.0.0.1")
        try:
            s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s6.close()
        except OSError as e:
            self.skip("inet6:*", f"no IPv6 sockets on this kernel ({e.strerror})")
            return
        self.tcp_pair(socket.AF_INET6, "::1", v6only=1)
        self.tcp_pair(socket.AF_INET6, "::1", v6only=0, brief=True)

    def tcp_pair(self, family: int, host: str, v6only: Optional[int] = None,
                 brief: bool = False) -> None:
        tag = "inet" if family == socket.AF_INET else f"inet6 v6only={v6only}"
        lst = socket.socket(family, socket.SOCK_STREAM)
        cli = socket.socket(family, socket.SOCK_STREAM)
        srv = None
        try:
            if v6only is not None:
                lst.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                cli.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
            lst.bind((host, 0))
            lst.listen(4)
            cli.connect(lst.getsockname()[:2])
            srv, _ = lst.accept()
            # the listener
            if not brief:
                rec = self.probe(lst.fileno())
                self.check_field(f"{tag} listen: skc_state", "skc_state", STATES[TCP_LISTEN],
                                 STATES.get(rec.state, rec.state))
                self.check_field(f"{tag} listen: skc_num", "skc_num", lst.getsockname()[1],
                                 rec.num)
            # the client: addresses, ports, type, state; write_seq
            rec0 = self.probe(cli.fileno())
            sent = 3000
            cli.sendall(os.urandom(sent))
            deadline = time.monotonic() + self.timeout
            while inq(srv) < sent and time.monotonic() < deadline:
                time.sleep(0.005)
            rec = self.probe(cli.fileno())
            self.sock_common(tag, rec, cli, family)
            if v6only is not None:
                self.check_field(f"{tag}: skc_ipv6only (bitfield)", "skc_ipv6only", v6only,
                                 rec.ipv6only)
            if brief:
                return
            st = os.fstat(cli.fileno())
            self.check_field(f"{tag}: inode.i_mode (socket)", "inode_i_mode", st.st_mode,
                             rec.i_mode, oct)
            why = self.absent("socket_file")
            self.add(f"{tag}: socket.file == fd's file", hex(rec.file),
                     "absent" if why else hex(rec.sock_file),
                     not why and rec.file != 0 and rec.file == rec.sock_file, why or "")
            addr = kallsyms("sock_read_iter")
            if addr is None:
                self.skip(f"{tag}: file_operations.read_iter", "/proc/kallsyms hides addresses")
            else:
                self.check_field(f"{tag}: file.f_op->read_iter == sock_read_iter", "fop_read_iter",
                                 hex(addr), hex(rec.read_iter))
            self.check_field(f"{tag}: tcp_sock.write_seq advance ({sent} bytes)",
                             "tcp_write_seq", sent, (rec.write_seq - rec0.write_seq) & 0xFFFFFFFF)
            wseq = queue_seq(cli, TCP_SEND_QUEUE)
            if wseq is None:
                self.skip(f"{tag}: tcp_sock.write_seq", "TCP_REPAIR needs CAP_NET_ADMIN")
            else:
                self.check_field(f"{tag}: tcp_sock.write_seq (TCP_REPAIR)", "tcp_write_seq",
                                 wseq, rec.write_seq)
            # the server side: copied_seq with unread data in its queue
            srv.recv(1000)
            rec = self.probe(srv.fileno())
            unread = inq(srv)
            rnxt = queue_seq(srv, TCP_RECV_QUEUE)
            if rnxt is None:
                self.skip(f"{tag}: tcp_sock.copied_seq", "TCP_REPAIR needs CAP_NET_ADMIN")
            else:
                self.check_field(f"{tag} accepted: tcp_sock.copied_seq (rcv_nxt - {unread} "
                                 f"unread)", "tcp_copied_seq", (rnxt - unread) & 0xFFFFFFFF,
                                 rec.copied_seq)
            self.check_field(f"{tag} accepted: skc_num", "skc_num", srv.getsockname()[1], rec.num)
            self.check_field(f"{tag} accepted: skc_dport", "skc_dport", srv.getpeername()[1],
                             rec.dport)
        finally:
            for s in (srv, cli, lst):
                if s is not None:
                    s.close()

    def sock_common(self, tag: str, rec, s: socket.socket, family: int) -> None:
        local, peer = s.getsockname(), s.getpeername()
        self.check_field(f"{tag}: skc_family", "skc_family", int(family), rec.family)
        self.check_field(f"{tag}: skc_state", "skc_state", STATES[TCP_ESTABLISHED],
                         STATES.get(rec.state, rec.state))
        self.check_field(f"{tag}: sk_type", "sk_type", int(socket.SOCK_STREAM), rec.sk_type)
        self.check_field(f"{tag}: sk_protocol", "sk_protocol", int(socket.IPPROTO_TCP),
                         rec.sk_protocol)
        self.check_field(f"{tag}: skc_num (local port)", "skc_num", local[1], rec.num)
        self.check_field(f"{tag}: skc_dport (peer port)", "skc_dport", peer[1], rec.dport)
        if family == socket.AF_INET:
            self.check_field(f"{tag}: skc_rcv_saddr", "skc_rcv_saddr", local[0], ip4(rec.saddr))
            self.check_field(f"{tag}: skc_daddr", "skc_daddr", peer[0], ip4(rec.daddr))
        else:
            self.check_field(f"{tag}: skc_v6_rcv_saddr", "skc_v6_rcv_saddr", local[0],
                             ip6(rec.saddr6))
            self.check_field(f"{tag}: skc_v6_daddr", "skc_v6_daddr", peer[0], ip6(rec.daddr6))

    # -- Go
    def go_checks(self) -> None:
        from .golang import GoFollower
        from .events import EventReader
        b = self.b
        proc = subprocess.Popen([self.go_probe, "serve"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        try:
            ready = proc.stdout.readline().split()
            if not ready or ready[0] != "ready":
                raise TracerError(f"tracer: {self.go_probe} serve did not start", 4)
            info = dict(w.split("=", 1) for w in ready[1:])
            pid = int(info["pid"])
            notes = []
            follower = GoFollower(b, self.k.machine, delay=0, only=[pid],
                                  log=notes.append,
                                  tls_g=self.values["task_fsbase"].ok)
            if not follower.add(pid):
                a = next(iter(follower.cache.values()), None)
                why = (a.error if a is not None and a.error else "; ".join(notes)) or "?"
                self.add("go: proc_info_map + uprobes", "attached", "not attached", False, why)
                return
            a = follower.binaries[follower.procs[pid].identity].analysis
            abi = ("stack ABI" if a.flags & F.GO_STACK_ABI else "register ABI") + \
                (", g at fsbase-8" if a.flags & F.GO_G_TLS else ", g in its register")
            self.add("go: proc_info_map[pid] + uprobes (entry + every RET)",
                     f"{a.version}, {len(a.probes)} uprobes", f"{len(a.probes)} attached", True,
                     f"{abi}; offsets: " + ", ".join(f"{k}={a.offset_sources[k]}"
                                                     for k in F.GO_USED.values()))
            B.set_config(b, events=1)
            reader = EventReader(b)
            self.go_call(proc, reader, pid, "write 1000", "go_tls_write", "", abi)
            self.go_call(proc, reader, pid, "read", "go_tls_read", "", abi)
            if self.k.machine == "x86_64" and not a.flags & F.GO_G_TLS:
                # the Go < 1.17 way to g: TLS at task_struct.thread.fsbase - 8 (Go keeps the
                # TLS slot current in every release, so a 1.17+ program proves it too)
                why = self.absent("task_fsbase")
                if why:
                    self.add("go: goid via fsbase-8 (Go < 1.17 path)", "goid", "absent", False, why)
                else:
                    raw = bytearray(B.get_proc_info(b, pid))
                    flags = struct.unpack_from("<I", raw, 4)[0]
                    struct.pack_into("<I", raw, 4, flags | F.GO_G_TLS)
                    B.put_proc_info(b, pid, bytes(raw))
                    self.go_call(proc, reader, pid, "write 300", "go_tls_write",
                                 " via fsbase-8 (Go < 1.17 path)", "register ABI, g at fsbase-8")
            follower.close()
            self.add("go: proc_info_map after detach", "no entry for the pid",
                     "no entry" if B.get_proc_info(b, pid) is None else "entry left",
                     B.get_proc_info(b, pid) is None)
            proc.stdin.close()
            self.add("go: the traced program ran on and exited normally", 0,
                     proc.wait(timeout=self.timeout))
        finally:
            B.set_config(b, events=0)
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def go_call(self, proc, reader, pid: int, cmd: str, kind: str, how: str, abi: str) -> None:
        proc.stdin.write(cmd + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline().split()
        if not line:
            self.add(f"go: {cmd}", "program output", "the program died", False)
            return
        said = dict(w.split("=", 1) for w in line[1:])
        conn = int(said["conn"], 16)
        ev = reader.wait(lambda e: e["event"] == kind and e["pid"] == pid and e["conn"] == conn,
                         self.timeout)
        label = f"go {line[0]}{how}"
        if ev is None:
            self.add(f"{label}: event", f"{kind} on conn {said['conn']}", "no event", False)
            return
        self.add(f"{label}: runtime.g.goid", int(said["goid"]), ev["goid"], note=abi)
        self.add(f"{label}: fd (tls.Conn.conn -> poll.FD.Sysfd)", int(said["fd"]), ev["fd"],
                 note=abi)
        self.add(f"{label}: n at RET", int(said["n"]), ev["len"], note=abi)


def format_table(res: Result) -> str:
    rows = [("field", "expected", "read", "")]
    for c in res.checks:
        rows.append((c.field, str(c.expected), str(c.read), "PASS" if c.ok else "FAIL"))
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    out = [f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in rows]
    for s in res.skipped:
        out.append(f"{s['field']:<{w[0]}}  SKIP: {s['reason']}")
    n_fail = sum(1 for c in res.checks if not c.ok)
    out.append(f"{'OK' if res.ok else 'FAILED'}: {len(res.checks) - n_fail} passed, {n_fail} "
               f"failed, {len(res.skipped)} skipped (offsets from {res.origin}; kernel "
               f"{res.kernel['release']})")
    return "\n".join(out)
