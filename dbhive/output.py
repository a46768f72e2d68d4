"""Every file the project writes goes through here: a temp file in the destination's own
directory, renamed over the destination only when complete, so a reader never sees half a
file and an interrupted write leaves nothing.

Rules:
  * the destination is a regular file or does not exist yet — a directory, device, FIFO or
    socket there is refused (run as root, `--out /dev/null` must not replace the null device);
  * its directory must exist when the user named the path (`must_exist_dir`), or is created
    (paths inside the hive);
  * temp files are named `.tmp-<pid>-<random><suffix>`, so the temp files a `kill -9` left
    behind are recognised and swept (their owner is dead and they are older than a minute)
    the next time something is written into that directory.
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from typing import Iterator, Optional

from .errors import OutputError

TEMP_PREFIX = ".tmp-"
_TEMP_NAME = re.compile(r"\.tmp-(\d+)-")
STALE_AFTER_S = 60


def check_destination(dest: str, must_exist_dir: bool = False) -> str:
    """The destination's directory (made if allowed); OutputError if `dest` cannot be
    written as a regular file."""
    dest_dir = os.path.dirname(os.path.abspath(dest)) or "."
    try:
        st = os.stat(dest)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"{dest}: cannot write here: {e.strerror}") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
                "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                "not a regular file")
        raise OutputError(f"{dest}: is {kind}; refusing to replace it with a file")
    if not os.path.isdir(dest_dir):
        if must_exist_dir or os.path.exists(dest_dir):
            raise OutputError(f"{dest}: directory {dest_dir} does not exist")
        try:
            os.makedirs(dest_dir, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{dest}: cannot make directory {dest_dir}: {e.strerror}") from None
    if not os.access(dest_dir, os.W_OK):
        raise OutputError(f"{dest}: directory {dest_dir} is not writable")
    return dest_dir


def sweep_stale_temps(directory: str, now: Optional[float] = None) -> list:
    """Remove the temp files (and temp directories) of writers that died: named by a pid
    that no longer runs, older than STALE_AFTER_S.  Returns what was removed."""
    now = time.time() if now is None else now
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        m = _TEMP_NAME.match(name)
        if not m or _alive(int(m.group(1))):
            continue
        path = os.path.join(directory, name)
        try:
            st = os.lstat(path)
            if now - st.st_mtime < STALE_AFTER_S:
                continue
            if stat.S_ISDIR(st.st_mode):
                import shutil
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temp_name(directory: str, suffix: str = "") -> str:
    """A new, empty temp file in `directory` named for this process."""
    fd, path = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=suffix,
                                dir=directory)
    os.close(fd)
    return path


def temp_dir(directory: str) -> str:
    """A new temp directory in `directory` named for this process (swept like temp files)."""
    return tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", dir=directory)


@contextlib.contextmanager
def atomic_path(dest: str, suffix: str = "", must_exist_dir: bool = False,
                mode: int = 0o666) -> Iterator[str]:
    """Yield a temp path beside `dest`; on a clean exit it is renamed over `dest` (with
    `mode` minus the umask), on any exception (Ctrl-C included) it is removed."""
    dest_dir = check_destination(dest, must_exist_dir)
    sweep_stale_temps(dest_dir)
    tmp = temp_name(dest_dir, suffix)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, mode & ~umask)          # mkstemp made it 0600
        check_destination(dest, must_exist_dir)   # nothing odd appeared there meanwhile
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(dest: str, data: bytes, must_exist_dir: bool = False, mode: int = 0o666) -> None:
    with atomic_path(dest, must_exist_dir=must_exist_dir, mode=mode) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
