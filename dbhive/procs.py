"""Worker processes that end with the process that started them.

A forked worker outlives a parent killed with SIGKILL (nothing runs in the parent to stop
it) and, when it writes to a pipe nobody reads any more, waits forever holding its memory.
Linux can send a signal to a process when its parent dies (prctl PR_SET_PDEATHSIG); the
setting is not inherited across fork, so every level of workers asks for it itself.
"""
from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> None:
    """Have the kernel send `sig` to this process when its parent dies; exit now if the
    parent (`parent_pid`, the pid seen before fork) is already gone.  No-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes                       # here: it costs every command's start-up otherwise
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        return                          # not fatal: only the clean-up after a kill is lost
    if os.getppid() != parent_pid:      # the parent died before the request took effect
        os._exit(1)


# what a forked child may send back: a pickled (DbhiveError or None, traceback text)
_MAX_REPORT = 1 << 20


class Forked:
    """`fn(*args)` running in a forked copy of this process (nothing is pickled on the way
    in).  `wait()` returns what it returned (pickled on the way out) once it is done, or
    raises what it raised: a DbhiveError as itself (a user's error), anything else as a
    RuntimeError carrying the child's traceback (a bug).  `kill()` stops it.  The child
    leaves interrupts to this process, which kills it; it dies with this process too
    (die_with_parent).  `nice`: the child's scheduling priority (19: only idle time)."""

    def __init__(self, what: str, fn, *args, nice: int = 0):
        self.what = what
        parent = os.getpid()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:                                    # the child: never returns
            status, report = 1, b""
            try:
                os.close(r)
                die_with_parent(parent)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if nice:
                    os.setpriority(os.PRIO_PROCESS, 0, nice)
                result = fn(*args)
                if result is not None:
                    import pickle
                    report = pickle.dumps((None, None, result))
                status = 0
            except BaseException as e:                  # report, never unwind the parent's stack
                report = _report(e)
            finally:
                try:
                    with os.fdopen(w, "wb") as fh:
                        fh.write(report)
                finally:
                    os._exit(status)
        os.close(w)
        self.pid, self._r = pid, r

    def wait(self):
        from .errors import OutputError
        try:
            with os.fdopen(self._r, "rb") as fh:
                self._r = None
                report = fh.read(_MAX_REPORT)
        except BaseException:                           # interrupted: do not wait for it
            self.kill()
            raise
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        code = os.waitstatus_to_exitcode(status)
        result = None
        if report:
            import pickle
            err, tb, result = pickle.loads(report)
            if err is not None:
                raise err
            if tb is not None:
                raise RuntimeError(f"{self.what} failed in a worker process:\n{tb}")
        if code != 0:
            raise OutputError(f"{self.what}: the worker process died "
                              f"({f'signal {-code}' if code < 0 else f'exit code {code}'})")
        return result

    def kill(self) -> None:
        """Stop the child (if still running) and reap it."""
        if self._r is not None:
            os.close(self._r)
            self._r = None
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.pid = None


def _report(e: BaseException) -> bytes:
    import pickle
    import traceback
    from .errors import DbhiveError
    tb = "".join(traceback.format_exception(e))
    try:
        return pickle.dumps((e if isinstance(e, DbhiveError) else None, tb, None))
    except Exception:                                   # an error that does not pickle
        return pickle.dumps((None, tb, None))


def can_fork() -> bool:
    """Whether forking a worker is safe here: fork exists, and this process runs no other
    thread (a thread holding a lock at the fork leaves it locked forever in the child)."""
    import threading
    return hasattr(os, "fork") and threading.active_count() == 1 and (os.cpu_count() or 1) > 1
