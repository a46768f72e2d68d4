"""`tracer start` for real: Go processes found and followed through the exec/fork/exit
tracepoints, proc_info_map and the uprobes (entry + every RET of crypto/tls.(*Conn).Write
and .Read) checked against the kernel's own view (bpftool's dump of the map, the tracer's
perf-event file descriptors) and the events against what the Go program prints; one analysis
per binary; nothing left after hundreds of short-lived processes; a process of another mount
and PID namespace found through /proc/PID/root; SIGTERM detaches and exits 0.

The machine is shared: other Go processes may come and go while these run, so checks are
about our processes, and about the tracer's own counts agreeing with the kernel's.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time

import pytest

from tests.support.tracer_env import MACHINE, TRACER, needs_bpf

pytestmark = needs_bpf


class Started:
    """`tracer start ... --events` in the background; its stdout events and stderr lines."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(TRACER + ["start", "--events", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: "queue.Queue[dict]" = queue.Queue()
        self.seen = []
        self.err: "queue.Queue[str]" = queue.Queue()
        self.err_lines = []
        import bcc
        # perf-event fds besides the uprobes: the perf buffer (one per CPU), 3 follow and 4
        # syscall tracepoints
        self.base_perf = len(bcc.utils.get_possible_cpus()) + 3 + 4
        threading.Thread(target=self._read_out, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()
        self.wait_err("started:", 60)

    def _read_out(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def _read_err(self):
        for line in self.proc.stderr:
            self.err_lines.append(line)
            self.err.put(line)

    def wait_err(self, text, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.err.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if "Traceback" in line:
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                time.sleep(0.2)
                raise AssertionError("the tracer crashed:\n" + "".join(self.err_lines))
            if text in line:
                return line
        raise AssertionError(f"no {text!r} from the tracer: {''.join(self.err_lines)}")

    def wait_event(self, pred, timeout=10.0):
        for ev in self.seen:
            if pred(ev):
                self.seen.remove(ev)
                return ev
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if pred(ev):
                return ev
            self.seen.append(ev)
        raise AssertionError("no such event; stderr: " + "".join(self.err_lines[-20:]))

    def drain(self):
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return self.seen

    def status(self) -> dict:
        self.proc.send_signal(signal.SIGUSR1)
        return json.loads(self.wait_err("status ").split("status ", 1)[1])

    def consistent(self, tries=60):
        """The tracer's counts, once no uprobe is being removed and they agree with the
        kernel: perf-event fds (one per uprobe, per CPU for the perf buffer, per tracepoint)
        and proc_info_map entries."""
        for _ in range(tries):
            st = self.status()
            fds, entries = perf_fds(self.proc.pid), map_keys(self.proc.pid)
            if st["detaching"] == 0 and fds == self.base_perf + st["uprobes"] and \
                    len(entries) == st["processes"]:
                return st, entries
            time.sleep(0.3)
        raise AssertionError(f"tracer counts {st} vs {fds} perf fds (base {self.base_perf}), "
                             f"{len(entries)} map entries")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        time.sleep(0.1)
        return rc


def perf_fds(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[perf_event]":
                n += 1
        except OSError:
            pass
    return n


def fd_kinds(pid: int) -> dict:
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            k = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        out[k] = out.get(k, 0) + 1
    return out


def files(pid: int) -> int:
    """Open files other than perf events and the /proc files the tracer reads in passing
    (lowest of a few looks, so that a read in progress does not count)."""
    counts = []
    for _ in range(5):
        counts.append(sum(n for k, n in fd_kinds(pid).items()
                          if k != "anon_inode:[perf_event]" and not k.startswith("/proc/")))
        time.sleep(0.05)
    return min(counts)


def map_id(pid: int, name: str) -> int:
    """The id of the BPF map called `name` that process pid holds (another tracer on the
    machine has its own maps of the same name)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-map":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                info = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        mid = int(info["map_id"])
        show = json.loads(subprocess.run(["bpftool", "-j", "map", "show", "id", str(mid)],
                                         capture_output=True, text=True, check=True).stdout)
        if show.get("name") == name:
            return mid
    raise AssertionError(f"process {pid} holds no BPF map {name}")


def map_keys(pid: int, name: str = "proc_info_map") -> dict:
    """{pid: value bytes} of a BPF map, from bpftool (the kernel's view, not the tracer's)."""
    out = subprocess.run(["bpftool", "-j", "map", "dump", "id", str(map_id(pid, name))],
                         capture_output=True, text=True, check=True).stdout
    res = {}
    for e in json.loads(out):
        key = bytes(int(x, 16) for x in e["key"])
        res[int.from_bytes(key, "little")] = bytes(int(x, 16) for x in e["value"])
    return res


class Probe:
    """tracerprobe serve: a Go TLS client+server; commands on stdin."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline().split()
        assert line and line[0] == "ready", line
        self.info = dict(w.split("=", 1) for w in line[1:])
        self.pid = self.proc.pid

    def call(self, cmd) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        assert line, f"the probe died on {cmd!r}"
        d = dict(w.split("=", 1) for w in line[1:])
        return {"goid": int(d["goid"]), "fd": int(d["fd"]), "conn": d["conn"], "n": int(d["n"])}

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            return self.proc.wait(timeout=10)
        return self.proc.returncode


def check_tls_events(tr: Started, probe: Probe, pid: int):
    for cmd, kind in (("write 1500", "go_tls_write"), ("read", "go_tls_read")):
        said = probe.call(cmd)
        ev = tr.wait_event(lambda e: e["event"] == kind and e["pid"] == pid
                           and e["conn"] == said["conn"])
        assert (ev["goid"], ev["fd"], ev["len"]) == (said["goid"], said["fd"], said["n"]), \
            (ev, said)


def attached(tr: Started, pid: int, timeout=10.0) -> dict:
    return tr.wait_event(lambda e: e["event"] == "go_attach" and e["pid"] == pid, timeout)


def detached(tr: Started, pid: int, timeout=10.0) -> dict:
    return tr.wait_event(lambda e: e["event"] == "go_detach" and e["pid"] == pid, timeout)


def test_follow_go_processes(running_db_file, probe_124, probe_119_strip, probe_115):
    """Existing and new Go processes (two toolchains, one stripped) are found, described in
    proc_info_map and probed once per binary; their TLS calls come out as events with the
    goid, fd and length the program printed; fork and exit are followed; SIGTERM detaches
    everything and exits 0 while the traced program runs on."""
    from resolver.golang import analyze_go_binary
    from tracer import fields as F
    first = Probe([probe_124, "serve"])                 # running before the tracer
    tr = Started("--ignore-btf", "--db", running_db_file, "--go-delay", "0")
    probes = [first]
    try:
        a1 = attached(tr, first.pid)
        rep = analyze_go_binary(probe_124, symbols=["crypto/tls.(*Conn).Write",
                                                    "crypto/tls.(*Conn).Read"])
        n_probes = sum(1 + len(s["returns"]) for s in rep.symbols.values())
        assert a1["uprobes"] == n_probes and a1["new_binary"] and a1["analysed"]
        check_tls_events(tr, first, first.pid)

        second = Probe([probe_124, "serve"])            # a new process of the same binary
        probes.append(second)
        a2 = attached(tr, second.pid)
        assert not a2["new_binary"] and not a2["analysed"] and a2["uprobes"] == n_probes
        check_tls_events(tr, second, second.pid)

        old = Probe([probe_119_strip, "serve"])         # another toolchain, stripped
        probes.append(old)
        a3 = attached(tr, old.pid)
        assert a3["version"].startswith("go1.19") and a3["new_binary"]
        check_tls_events(tr, old, old.pid)

        ancient = Probe([probe_115, "serve"])           # Go < 1.17: stack ABI, g in TLS
        probes.append(ancient)
        assert attached(tr, ancient.pid)["version"].startswith("go1.15")
        check_tls_events(tr, ancient, ancient.pid)
        assert ancient.close() == 0
        detached(tr, ancient.pid)

        st, entries = tr.consistent()
        for p, minor in ((first, 24), (old, 19)):
            assert p.pid in entries
            version = int.from_bytes(entries[p.pid][:4], "little")    # (major<<16)|(minor<<8)|patch
            assert (version >> 16, (version >> 8) & 0xFF) == (1, minor), hex(version)
        goid_slot = F.go_offset_keys().index("runtime.g.goid")
        goid_off = int.from_bytes(entries[first.pid][16 + 4 * goid_slot:20 + 4 * goid_slot],
                                  "little", signed=True)
        assert goid_off == 160                           # Go 1.23-1.24 (formats.md)
        goid_off = int.from_bytes(entries[old.pid][16 + 4 * goid_slot:20 + 4 * goid_slot],
                                  "little", signed=True)
        assert goid_off == 152                           # Go 1.19, from the table (stripped)

        # fork without exec: the child is followed too
        fork = subprocess.Popen([probe_124, "fork", "1500"], stdout=subprocess.PIPE, text=True)
        fa = attached(tr, fork.pid)                     # the parent, after its exec
        child = int(fork.stdout.readline().split("=")[1])
        ca = tr.wait_event(lambda e: e["event"] == "go_attach" and e["pid"] == child, 10)
        assert ca["binary"] == fa["binary"] and not ca["analysed"]
        assert fork.wait(timeout=20) == 0
        detached(tr, child)
        detached(tr, fork.pid)

        # exits: the map entry goes at once, the probes with the binary's last process
        assert second.close() == 0
        assert not detached(tr, second.pid)["last_of_binary"]
        assert old.close() == 0
        assert detached(tr, old.pid)["last_of_binary"]
        gone = tr.wait_event(lambda e: e["event"] == "go_uprobes_detached"
                             and e["binary"].endswith(probe_119_strip), 10)
        assert gone["uprobes"] == n_probes_of(probe_119_strip)
        st, entries = tr.consistent()
        assert second.pid not in entries and old.pid not in entries and first.pid in entries
    finally:
        rc = tr.stop()
        alive = [p for p in probes if p.proc.poll() is None]
    assert rc == 0, "".join(tr.err_lines)
    assert "stopped: probes detached, maps cleared" in "".join(tr.err_lines)
    # the traced program runs on without the tracer
    assert alive == [first]
    assert first.call("write 10")["n"] == 10
    assert first.close() == 0


def test_wrong_abi_reads_wrong_values(probe_115, probe_124):
    """The calling convention in proc_info_map matters: a Go 1.15 program read as if it used
    the register ABI (and a 1.24 one as if it used the stack) gives wrong goids and fds."""
    from tracer import bpf as B
    from tracer import fields as F
    from tracer.events import EventReader
    from tracer.golang import GoFollower
    from tracer.kernel import running
    from tracer.offsets import members_words, resolve_all
    from resolver import Resolver
    b = B.compile_program(MACHINE)
    try:
        B.fill_members(b, F.pack_members(members_words(resolve_all(
            Resolver.from_btf("/sys/kernel/btf/vmlinux"), MACHINE))))
        B.set_config(b, events=1)
        reader = EventReader(b)
        for path in (probe_115, probe_124):
            p = Probe([path, "serve"])
            try:
                f = GoFollower(b, running().machine, delay=0, only=[p.pid])
                assert f.add(p.pid)
                raw = bytearray(B.get_proc_info(b, p.pid))
                flags = int.from_bytes(raw[4:8], "little")
                raw[4:8] = (flags ^ (F.GO_STACK_ABI | F.GO_G_TLS)).to_bytes(4, "little")
                B.put_proc_info(b, p.pid, bytes(raw))
                said = p.call("write 700")
                ev = reader.wait(lambda e: e["event"] == "go_tls_write" and e["pid"] == p.pid,
                                 1.0)
                assert ev is None or (ev["goid"], ev["fd"]) != (said["goid"], said["fd"]), ev
                f.close()
            finally:
                assert p.close() == 0
    finally:
        b.cleanup()


def n_probes_of(path: str) -> int:
    from resolver.golang import analyze_go_binary
    rep = analyze_go_binary(path, symbols=["crypto/tls.(*Conn).Write", "crypto/tls.(*Conn).Read"])
    return sum(1 + len(s["returns"]) for s in rep.symbols.values())


def test_no_leaks_after_short_lived_processes(running_db_file, probe_124):
    """300 short-lived Go processes of one binary: one analysis, and afterwards none of them
    in proc_info_map, no uprobe or open file left beyond what the tracer reports."""
    tr = Started("--ignore-btf", "--db", running_db_file, "--go-delay", "0")
    try:
        tr.consistent()
        base_files = files(tr.proc.pid)
        pids = []
        running = []
        for i in range(300):
            running.append(subprocess.Popen([probe_124, "sleep", "150"]))
            if len(running) >= 10:
                p = running.pop(0)
                assert p.wait(timeout=30) == 0
            pids.append(running[-1].pid)
        for p in running:
            assert p.wait(timeout=30) == 0
        time.sleep(1.0)
        st, entries = tr.consistent()
        evs = list(tr.drain())
        ours = set(pids)
        att = [e for e in evs if e["event"] == "go_attach" and e["pid"] in ours]
        dets = [e for e in evs if e["event"] == "go_detach" and e["pid"] in ours]
        det = {e["pid"] for e in dets}
        # removed on the exit tracepoint, not by the periodic check that catches lost events
        assert sum(1 for e in dets if e["why"] == "exit") >= 0.9 * len(dets)
        print(f"{len(att)} of 300 short-lived processes attached")
        assert len(att) >= 150, f"only {len(att)} of 300 attached"
        assert sum(1 for e in att if e["analysed"]) <= 1          # one analysis, cached after
        assert {e["pid"] for e in att} <= det                      # every attach undone
        assert not ours & set(entries)                            # nothing left in the map
        # the binary's uprobes, once its last process is gone
        tr.wait_event(lambda e: e["event"] == "go_uprobes_detached"
                      and e["binary"].endswith(probe_124), 15)
        tr.consistent()
        assert files(tr.proc.pid) == base_files, fd_kinds(tr.proc.pid)
    finally:
        assert tr.stop() == 0


def test_go_delay_and_pid_filter(running_db_file, probe_124):
    """A new process is attached after --go-delay (not before, and within 1 s after); with
    --pid only the listed process is followed."""
    watched = Probe([probe_124, "serve"])
    tr = Started("--ignore-btf", "--db", running_db_file, "--go-delay", "1.5",
                 "--pid", str(watched.pid))
    try:
        attached(tr, watched.pid)                         # existing: no delay
        other = Probe([probe_124, "serve"])
        try:
            other.call("write 10")
            with pytest.raises(AssertionError):
                attached(tr, other.pid, timeout=3)
        finally:
            other.close()
    finally:
        assert tr.stop() == 0
        watched.close()
    tr = Started("--ignore-btf", "--db", running_db_file, "--go-delay", "1.5")
    try:
        t0 = time.monotonic()
        p = Probe([probe_124, "serve"])
        try:
            attached(tr, p.pid, timeout=5)
            dt = time.monotonic() - t0
            assert 1.5 <= dt <= 2.5 + 0.5, dt
            check_tls_events(tr, p, p.pid)
        finally:
            p.close()
    finally:
        assert tr.stop() == 0


def test_process_in_another_mount_and_pid_namespace(running_db_file, probe_124, tmp_path):
    """A Go program whose binary exists only inside its own mount namespace (a tmpfs mounted
    there), in its own PID namespace: found through /proc/PID/root, keyed by the host pid."""
    hidden = tmp_path / "only-in-ns"
    hidden.mkdir()
    inner = hidden / "probe"
    tr = Started("--ignore-btf", "--db", running_db_file, "--go-delay", "0")
    proc = subprocess.Popen(
        ["unshare", "-m", "-p", "-f", "--mount-proc", "sh", "-c",
         f"mount -t tmpfs none {hidden} && cp {probe_124} {inner} && exec {inner} serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()
        assert line and line[0] == "ready", line
        assert dict(w.split("=", 1) for w in line[1:])["pid"] == "1"     # pid 1 in its ns
        assert not inner.exists()                      # not on the host
        host = [int(d) for d in os.listdir("/proc") if d.isdigit()
                and _exe(int(d)) == str(inner)]
        assert len(host) == 1
        ev = attached(tr, host[0])
        assert ev["binary"] == f"/proc/{host[0]}/root{inner}"
        probe = Probe.__new__(Probe)
        probe.proc, probe.pid = proc, host[0]
        check_tls_events(tr, probe, host[0])
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=20) == 0
        assert tr.stop() == 0


def _exe(pid: int):
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return None
