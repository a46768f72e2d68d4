"""`tracer start`: fill members_offset (every CPU, ready=1) and proc_info_map, follow Go
processes (exec/fork/exit tracepoints), and with --events print one JSON line per TCP
write/read and Go TLS write/read, until SIGINT/SIGTERM: then detach everything, clear the
maps and exit 0."""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Iterable, Optional

from . import bpf as B
from . import fields as F
from .events import EventReader
from .golang import GoFollower
from .kernel import Running
from .offsets import Source, members_words, resolve_all


class Tracer:
    def __init__(self, src: Source, k: Running, go_delay: float = 60.0,
                 pids: Optional[Iterable[int]] = None, events: bool = False,
                 out=None, err=None):
        self.src, self.k = src, k
        self.go_delay = go_delay
        self.pids = list(pids) if pids else None
        self.events = events
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.stop = False
        self.b = None
        self.follower: Optional[GoFollower] = None
        self.timings = {}
        self._status = None

    def say(self, msg: str) -> None:
        print(f"tracer: {msg}", file=self.err, flush=True)

    def emit(self, ev: dict) -> None:
        if self.events:
            self.out.write(json.dumps(ev) + "\n")
            self.out.flush()

    def status_json(self) -> None:
        """SIGUSR1: the follower's counts as one JSON status line on stderr."""
        self.say("status " + json.dumps(self.follower.counts()))

    def status(self, force: bool = False) -> None:
        c = self.follower.counts()
        key = (c["processes"], c["binaries"], c["uprobes"])
        if force or key != self._status:
            self._status = key
            self.say(f"{c['processes']} Go processes attached ({c['binaries']} binaries, "
                     f"{c['uprobes']} uprobes; {c['analyses']} binaries analysed)")

    def on_event(self, ev: dict) -> None:
        kind = ev["event"]
        if kind == "exec":
            self.follower.on_exec(ev["pid"])
        elif kind == "fork":
            self.follower.on_fork(ev["pid"], ev["child"])
        elif kind == "exit":
            self.follower.on_exit(ev["pid"])
        else:
            if kind.startswith("go_"):
                ev["conn"] = hex(ev["conn"])
            self.emit(ev)

    def setup(self) -> None:
        t0 = time.monotonic()
        vals = resolve_all(self.src.resolver, self.k.machine)
        raw = F.pack_members(members_words(vals))
        absent = [v.member.name for v in vals if not v.ok]
        self.b = B.compile_program(self.k.machine)
        t1 = time.monotonic()
        B.set_config(self.b, self_tgid=os.getpid(), follow=1, events=1 if self.events else 0)
        B.fill_members(self.b, raw)
        fsbase_ok = all(v.ok for v in vals if v.member.name == "task_fsbase")
        self.follower = GoFollower(self.b, self.k.machine, delay=self.go_delay, only=self.pids,
                                   notify=self.emit, log=self.say, tls_g=fsbase_ok)
        self.reader = EventReader(self.b, on_event=self.on_event, pages=256)
        for entry, ret in B.GO_FUNCS.values():      # loaded now: errors show at start
            for prog in (entry, ret):
                B.load(self.b, prog)
        for prog in B.FOLLOW_PROGRAMS:
            B.attach_tracepoint(self.b, prog)
        if self.events:
            for prog in B.SYSCALL_PROGRAMS:
                B.attach_tracepoint(self.b, prog)
        self.follower.scan()
        t2 = time.monotonic()
        self.timings = {"compile_s": round(t1 - t0, 3), "maps_filled_s": round(t2 - t1, 3)}
        for w in self.src.warnings:
            self.say(f"warning: {w}")
        self.say(f"started: offsets from {self.src.label} ({len(vals) - len(absent)} of "
                 f"{len(vals)} fields{'; absent: ' + ', '.join(absent) if absent else ''}); "
                 f"bcc compile {self.timings['compile_s']} s, maps filled "
                 f"{self.timings['maps_filled_s']} s after load")
        self.status(force=True)

    def run(self) -> int:
        def _stop(signum, frame):
            self.stop = True
        want_status = []
        old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
        old[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, lambda s, f: want_status.append(1))
        try:
            self.setup()
            while not self.stop:
                self.reader.poll(100)
                self.follower.tick()
                self.status()
                if want_status:
                    want_status.clear()
                    self.status_json()
        finally:
            self.shutdown()
            for s, h in old.items():
                signal.signal(s, h)
        return 0

    def shutdown(self) -> None:
        if self.b is None:
            return
        try:
            if self.follower is not None:
                self.follower.close()
            B.clear_maps(self.b)
        finally:
            self.b.cleanup()
            self.b = None
        self.say("stopped: probes detached, maps cleared")
