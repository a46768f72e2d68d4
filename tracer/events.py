"""Events from the BPF side (the `events` perf buffer) as dicts, one JSON line each for
`tracer start --events`."""
from __future__ import annotations

import ctypes
import socket
import time
from collections import deque
from typing import Callable, Deque, List, Optional

from .bpf import EVENT_KINDS

TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
              11: "CLOSING", 12: "NEW_SYN_RECV"}


def decode(leaf_type, data) -> dict:
    """One struct tracer_event (bcc's ctypes type of it) as a dict."""
    e = ctypes.cast(data, ctypes.POINTER(leaf_type)).contents
    kind = EVENT_KINDS.get(e.kind, f"kind{e.kind}")
    d = {"event": kind, "pid": e.pid, "tid": e.tid}
    if kind in ("tcp_write", "tcp_read"):
        fam = "inet6" if e.family == socket.AF_INET6 else "inet"
        raw_s, raw_d = bytes(e.saddr), bytes(e.daddr)
        if fam == "inet6":
            sa, da = (socket.inet_ntop(socket.AF_INET6, x) for x in (raw_s, raw_d))
        else:
            sa, da = (socket.inet_ntoa(x[:4]) for x in (raw_s, raw_d))
        d.update(fd=e.fd, family=fam, saddr=sa, sport=e.sport, daddr=da, dport=e.dport,
                 state=TCP_STATES.get(e.state, e.state), ret=e.ret)
    elif kind in ("go_tls_write", "go_tls_read"):
        d.update(goid=e.goid, fd=e.fd, len=e.ret, conn=e.conn)
    elif kind == "fork":
        d["child"] = e.child
    elif kind == "exec":
        d["old_pid"] = e.tid
    return d


class EventReader:
    """The perf buffer, polled on demand; events kept until someone takes them."""

    def __init__(self, b, on_event: Optional[Callable[[dict], None]] = None, pages: int = 64):
        self.b = b
        self.leaf = b[b"sys_calls"].Leaf        # the same struct tracer_event, typed by bcc
        self.queue: Deque[dict] = deque(maxlen=100000)
        self.lost = 0
        self.on_event = on_event
        b[b"events"].open_perf_buffer(self._cb, page_cnt=pages, lost_cb=self._lost)

    def _cb(self, cpu, data, size):
        ev = decode(self.leaf, data)
        if self.on_event is not None:
            self.on_event(ev)
        else:
            self.queue.append(ev)

    def _lost(self, n):
        self.lost += n

    def poll(self, timeout_ms: int = 100) -> None:
        self.b.perf_buffer_poll(timeout=timeout_ms)

    def wait(self, pred: Callable[[dict], bool], timeout: float) -> Optional[dict]:
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.queue):
                if pred(ev):
                    del self.queue[i]
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.poll(max(1, min(100, int(left * 1000))))

    def drain(self) -> List[dict]:
        out = list(self.queue)
        self.queue.clear()
        return out
