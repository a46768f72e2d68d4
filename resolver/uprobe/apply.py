"""`resolver expr … --apply`: the translated uprobe lines written into tracefs, their events
enabled in a tracing instance of our own, the events streamed from its trace_pipe, and
everything removed again on exit (SIGINT, SIGTERM, --duration, --count).

Each line goes to uprobe_events under a group of our own (`p:dbhive_<pid>/p0 …`), so that
neither another tool's `p0` nor a second run here collides with it; the events are enabled
only in the instance `instances/dbhive_<pid>`, so the global trace buffer is not touched.
tracefs is found at /sys/kernel/tracing or /sys/kernel/debug/tracing, and mounted at
/sys/kernel/tracing when it is not mounted yet (as the tracer does).  A line the kernel
refuses is reported with the kernel's own reason (tracing/error_log).
"""
from __future__ import annotations

import errno
import json
import os
import re
import select
import signal
import time
from typing import Callable, Iterator, List, Optional

from dbhive.errors import SetupError

from ..tracefs import tracefs_dir

MAX_LINE = 1 << 16

# `  comm-123  [001] d..1.  12.345678: p0: (0x55d0c1a2b139) a=1 s="x y"`
_EVENT = re.compile(r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
                    r"(?:\S+\s+)?(?P<ts>\d+\.\d+): (?P<event>[^:\s]+): \((?P<ip>[^)]*)\)"
                    r"(?P<args>.*)$")
_ARG = re.compile(r'\s([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)')


class TracefsError(SetupError):
    """tracefs cannot be used as asked (not root, a line the kernel refuses)."""


def parse_event(line: str) -> Optional[dict]:
    """One trace_pipe line as {"comm", "pid", "cpu", "ts", "event", "ip", "args": {..}}."""
    m = _EVENT.match(line)
    if not m:
        return None
    args = {}
    for k, v in _ARG.findall(m.group("args")):
        args[k] = v[1:-1].encode().decode("unicode_escape") if v.startswith('"') else v
    return {"comm": m.group("comm"), "pid": int(m.group("pid")), "cpu": int(m.group("cpu")),
            "ts": float(m.group("ts")), "event": m.group("event"), "ip": m.group("ip"),
            "args": args}


def _grouped(line: str, group: str) -> tuple:
    """('p:<group>/p0 …', 'p0') from a translated line 'p:p0 …'."""
    head, _, rest = line.partition(" ")
    kind, _, name = head.partition(":")
    return f"{kind}:{group}/{name} {rest}", name


class Applied:
    """The probes in tracefs for the lifetime of the object (a context manager)."""

    def __init__(self, probes, group: Optional[str] = None):
        if os.geteuid() != 0:
            raise TracefsError("--apply writes tracefs uprobe_events: it needs root")
        self.base = tracefs_dir("uprobe_events")
        self.group = group or f"dbhive_{os.getpid()}"
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", self.group):
            raise TracefsError(f"{self.group!r}: an event group is a C identifier")
        self.instance = os.path.join(self.base, "instances", self.group)
        self.probes = list(probes)
        self.events: List[str] = []
        self._made_instance = False

    # ---- set up / tear down ----------------------------------------------------------------
    def __enter__(self) -> "Applied":
        try:
            self._setup()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def _write(self, path: str, text: str, append: bool = False) -> Optional[OSError]:
        flags = os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC)
        try:
            fd = os.open(path, flags)
        except OSError as e:
            return e
        try:
            os.write(fd, text.encode() + b"\n")
        except OSError as e:
            return e
        finally:
            os.close(fd)
        return None

    def _kernel_reason(self) -> str:
        try:
            with open(os.path.join(self.base, "error_log")) as fh:
                lines = [ln.strip() for ln in fh.read(MAX_LINE).splitlines() if ln.strip()]
        except OSError:
            return ""
        return " | ".join(lines[-3:])

    def _setup(self) -> None:
        try:
            os.mkdir(self.instance)
            self._made_instance = True
        except FileExistsError:
            raise TracefsError(f"{self.instance} exists already (another --apply of this "
                               f"group?)") from None
        except OSError as e:
            raise TracefsError(f"cannot make tracing instance {self.instance}: "
                               f"{e.strerror}") from None
        events = os.path.join(self.base, "uprobe_events")
        for p in self.probes:
            text, name = _grouped(p.line, self.group)
            self._write(os.path.join(self.base, "error_log"), "")     # clear old reasons
            err = self._write(events, text, append=True)
            if err is not None:
                why = self._kernel_reason() or err.strerror
                raise TracefsError(f"the kernel refused {text!r}: {why}")
            self.events.append(name)
            ev = os.path.join(self.instance, "events", self.group, name)
            if p.filter:
                err = self._write(os.path.join(ev, "filter"), p.filter)
                if err is not None:
                    raise TracefsError(f"the kernel refused the filter {p.filter!r} of "
                                       f"{name}: {self._kernel_reason() or err.strerror}")
            err = self._write(os.path.join(ev, "enable"), "1")
            if err is not None:
                raise TracefsError(f"cannot enable {ev}: {err.strerror}")

    def disable(self) -> None:
        for name in self.events:
            self._write(os.path.join(self.instance, "events", self.group, name, "enable"), "0")

    def remove(self) -> None:
        """Disable and delete every event written, and the instance (errors ignored: the
        best that can be done on the way out)."""
        self.disable()
        if self._made_instance:
            for _ in range(50):           # busy while a reader still has trace_pipe open
                try:
                    os.rmdir(self.instance)
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        break
                    time.sleep(0.1)
            self._made_instance = False
        events = os.path.join(self.base, "uprobe_events")
        for name in self.events:
            self._write(events, f"-:{self.group}/{name}", append=True)
        self.events = []

    # ---- reading -----------------------------------------------------------------------------
    def stream(self, stop: Callable[[], bool]) -> Iterator[str]:
        """Lines of the instance's trace_pipe until stop() is true; then the events are
        disabled and what is left in the buffer is read too."""
        fd = os.open(os.path.join(self.instance, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        pending = b""
        try:
            draining = False
            while True:
                if not draining and stop():
                    self.disable()
                    draining = True
                if not draining:
                    select.select([fd], [], [], 0.2)
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    chunk = b""
                if not chunk:
                    if draining:
                        break
                    continue
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for ln in lines:
                    yield ln.decode(errors="replace")
                if len(pending) > MAX_LINE:
                    yield pending.decode(errors="replace")
                    pending = b""
            if pending:
                yield pending.decode(errors="replace")
        finally:
            os.close(fd)


def run(probes, out, as_json: bool = False, duration: Optional[float] = None,
        count: Optional[int] = None, group: Optional[str] = None, ready=None) -> int:
    """--apply: put the probes in, print events until SIGINT/SIGTERM, `duration` seconds or
    `count` events, take them out.  Returns the number of events printed."""
    stopping = {"flag": False}

    def on_signal(_sig, _frame):
        stopping["flag"] = True

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = 0
    try:
        with Applied(probes, group) as applied:
            if ready is not None:
                ready(applied)
            t_end = None if duration is None else time.monotonic() + duration

            def stop() -> bool:
                return stopping["flag"] or (t_end is not None and time.monotonic() >= t_end) \
                    or (count is not None and seen >= count)

            for line in applied.stream(stop):
                ev = parse_event(line)
                if ev is None:
                    continue
                seen += 1
                out(json.dumps(ev) if as_json else line)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return seen
