"""Where tracefs is, mounting it when nothing is mounted yet (as root).  Used by the tracer
(bcc reads tracepoint ids and formats there) and by `resolver expr --apply` (uprobe_events).
"""
from __future__ import annotations

import os

from dbhive.errors import SetupError

TRACEFS_PLACES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def tracefs_dir(need: str = "events") -> str:
    """The tracefs directory holding `need` (a file or directory of tracefs: `events`,
    `uprobe_events`), mounting tracefs at /sys/kernel/tracing when nothing is mounted yet.
    SetupError (one line) when it cannot be had."""
    for p in TRACEFS_PLACES:
        if os.path.exists(os.path.join(p, need)):
            return p
    target = TRACEFS_PLACES[0]
    if os.geteuid() == 0 and os.path.isdir(target) and not os.path.ismount(target):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) != 0:
            raise SetupError(f"tracefs is not mounted and mounting it at {target} failed: "
                             f"{os.strerror(ctypes.get_errno())}")
    if os.path.exists(os.path.join(target, need)):
        return target
    if os.path.ismount(target):
        raise SetupError(f"{target}/{need} is missing: this kernel lacks it "
                         f"({'CONFIG_UPROBE_EVENTS' if need == 'uprobe_events' else 'tracing'})")
    raise SetupError(f"tracefs is not mounted (mount -t tracefs nodev {target})")
