"""Worker processes that end with the process that started them.

A forked worker outlives a parent killed with SIGKILL (nothing runs in the parent to stop
it) and, when it writes to a pipe nobody reads any more, waits forever holding its memory.
Linux can send a signal to a process when its parent dies (prctl PR_SET_PDEATHSIG); the
setting is not inherited across fork, so every level of workers asks for it itself.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent dies; exit now if the
    parent (`parent_pid`, the pid seen before fork) is already gone.  No-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return                          # not fatal: only the clean-up after a kill is lost
    if os.getppid() != parent_pid:      # the parent died before the request took effect
        os._exit(1)
