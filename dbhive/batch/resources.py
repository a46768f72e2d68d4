"""How many builds fit at once on this machine (or in this container).

A DWARF build's peak memory (its process tree: the build and its DWARF workers) and the
size of the vmlinux it extracts into the scratch directory, times the number of builds
running together, must fit in the memory available and the scratch disk free.  Until the
batch has measured a build, the estimates are DEFAULT_PEAK_RSS and DEFAULT_KERNEL_BYTES
(measured on Debian's 6.1 kernel, rounded up); afterwards the largest measured values.

Limits seen from inside a container count: cgroup v2 `memory.max` / v1
`memory.limit_in_bytes` (less what the group uses), cgroup `cpu.max` quotas, and the CPU
affinity mask.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from ..errors import InputError

GiB = 1 << 30
# one DWARF build of the 6.1 vmlinux (587 MB, 163 MB .debug_info): ~0.35 GB in the build
# process, ~0.25 GB per DWARF worker at their peak; rounded up
DEFAULT_PEAK_RSS = 1 * GiB
DEFAULT_KERNEL_BYTES = 1 * GiB       # the extracted vmlinux (587 MB for 6.1, 628 MB for 5.10)
DISK_MARGIN = 256 << 20              # DBs and temp files besides the vmlinux


def cpu_count() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:
        n = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def _cgroup_cpu_quota() -> Optional[float]:
    text = _read("/sys/fs/cgroup/cpu.max")                       # v2: "max 100000" / "200000 100000"
    if text:
        parts = text.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                return int(parts[0]) / int(parts[1])
            except (ValueError, ZeroDivisionError):
                return None
        return None
    quota = _read("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")          # v1
    period = _read("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
    try:
        if quota and period and int(quota) > 0:
            return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        pass
    return None


def memory_available() -> int:
    """Bytes of memory a new process could use: MemAvailable, capped by the cgroup's
    remaining limit."""
    avail = None
    meminfo = _read("/proc/meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith("MemAvailable:"):
            avail = int(line.split()[1]) * 1024
    if avail is None:
        avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read(limit_file), _read(usage_file)
        if limit and usage and limit.isdigit() and usage.isdigit():
            if int(limit) < (1 << 60):                  # v1 writes a huge number for "none"
                avail = min(avail, max(0, int(limit) - int(usage)))
            break
    return avail


def disk_free(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _read(path: str) -> Optional[str]:
    try:
        with open(path) as fh:
            return fh.read(4096).strip()
    except OSError:
        return None


@dataclass
class Budget:
    """What the batch may use, taken once at its start, and the per-build estimates."""
    memory: int
    disk: int
    peak_rss: int = DEFAULT_PEAK_RSS
    kernel_bytes: int = DEFAULT_KERNEL_BYTES
    measured: bool = False

    @classmethod
    def now(cls, scratch: str) -> "Budget":
        return cls(memory=memory_available(), disk=disk_free(scratch))

    def learn(self, peak_rss: Optional[int], kernel_bytes: Optional[int]) -> None:
        """A finished DWARF build's measurements: the largest so far become the estimates
        (the defaults are replaced by the first measurement)."""
        if peak_rss:
            self.peak_rss = peak_rss if not self.measured else max(self.peak_rss, peak_rss)
        if kernel_bytes:
            self.kernel_bytes = (kernel_bytes if not self.measured else
                                 max(self.kernel_bytes, kernel_bytes))
        if peak_rss or kernel_bytes:
            self.measured = True

    def fits(self, wanted: int) -> tuple[int, str]:
        """(builds that fit, why fewer than `wanted`, '' when all do)."""
        by_mem = max(1, self.memory // max(1, self.peak_rss))
        by_disk = max(1, (self.disk - DISK_MARGIN) // max(1, self.kernel_bytes))
        n = min(wanted, by_mem, by_disk)
        if n >= wanted:
            return wanted, ""
        how = "measured" if self.measured else "estimated"
        if by_mem <= by_disk:
            why = (f"memory for {n} ({_gib(self.memory)} available, a DWARF build peaks at "
                   f"{_gib(self.peak_rss)}, {how})")
        else:
            why = (f"scratch disk for {n} ({_gib(self.disk)} free, a vmlinux takes "
                   f"{_gib(self.kernel_bytes)}, {how})")
        return n, why


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """`512M`, `4G`, `1.5G`, `1073741824` -> bytes (binary units, an optional `iB`/`B`)."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    number = t[:-1] if unit else t
    try:
        value = float(number)
    except ValueError:
        raise InputError(f"{text!r}: not a size (e.g. 512M, 4G)") from None
    if value <= 0:
        raise InputError(f"{text!r}: a size must be positive")
    return int(value * _UNITS[unit])


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"
