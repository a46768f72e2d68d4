"""The running kernel as the tracer sees it: can we run here, where might its BTF be, and the
machine set-up bcc needs (tracefs, kernel headers)."""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import List, Optional

MIN_KERNEL = (4, 14)
ARCHES = ("x86_64", "aarch64")
NOTES = "/sys/kernel/notes"
SYS_BTF = "/sys/kernel/btf/vmlinux"
TRACEFS_PLACES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class TracerError(Exception):
    """A condition the user can fix or must know: one line, an exit code, no traceback."""
    exit_code = 1

    def __init__(self, msg: str, exit_code: Optional[int] = None):
        super().__init__(msg)
        if exit_code is not None:
            self.exit_code = exit_code


@dataclass
class Running:
    release: str
    machine: str
    version: tuple
    build_id: Optional[str]


def parse_release(release: str) -> Optional[tuple]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def gnu_build_id(notes: bytes) -> Optional[str]:
    """The GNU build-id (hex) in an ELF note blob such as /sys/kernel/notes."""
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        pos += 12
        name = notes[pos:pos + namesz]
        pos += (namesz + 3) & ~3
        desc = notes[pos:pos + descsz]
        pos += (descsz + 3) & ~3
        if ntype == 3 and name.rstrip(b"\0") == b"GNU":      # NT_GNU_BUILD_ID
            return desc.hex()
    return None


def running() -> Running:
    u = os.uname()
    bid = None
    try:
        with open(NOTES, "rb") as fh:
            bid = gnu_build_id(fh.read(1 << 16))
    except OSError:
        pass
    return Running(u.release, u.machine, parse_release(u.release) or (0, 0), bid)


def check_supported(k: Running) -> None:
    """Refuse kernels older than 4.14 and machines other than x86_64/aarch64."""
    if k.machine not in ARCHES:
        raise TracerError(f"tracer: {k.machine} is not supported (x86_64 and aarch64 only)", 2)
    if k.version < MIN_KERNEL:
        raise TracerError(f"tracer: kernel {k.release} is older than 4.14, the oldest the "
                          f"tracer supports", 2)


def btf_places(release: str) -> List[str]:
    """Every place a kernel's BTF may already be (shared/docs/formats.md), in order."""
    return [SYS_BTF,
            f"/usr/lib/btf/vmlinux-{release}.btf",
            f"/boot/vmlinux-{release}",
            f"/lib/modules/{release}/vmlinux",
            f"/usr/lib/debug/boot/vmlinux-{release}",
            f"/usr/lib/debug/lib/modules/{release}/vmlinux"]


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"\x7fELF"
    except OSError:
        return False


# ---- what bcc needs ------------------------------------------------------------------------

def tracefs() -> str:
    """The tracefs directory (tracepoint ids and formats live there), mounting it at
    /sys/kernel/tracing when nothing is mounted yet (as root; 4.1+ kernels have tracefs)."""
    for p in TRACEFS_PLACES:
        if os.path.isdir(os.path.join(p, "events")):
            return p
    target = TRACEFS_PLACES[0]
    if os.geteuid() == 0 and os.path.isdir(target):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"nodev", target.encode(), b"tracefs", 0, None) == 0:
            return target
        err = ctypes.get_errno()
        raise TracerError(f"tracer: tracefs is not mounted and mounting it at {target} failed: "
                          f"{os.strerror(err)}", 3)
    raise TracerError("tracer: tracefs is not mounted (mount -t tracefs nodev "
                      "/sys/kernel/tracing)", 3)


def headers_hint(release: str) -> str:
    """Why bcc may have failed to compile: kernel headers are looked for where bcc looks."""
    if os.environ.get("BCC_KERNEL_SOURCE"):
        return f"$BCC_KERNEL_SOURCE={os.environ['BCC_KERNEL_SOURCE']}"
    build = f"/lib/modules/{release}/build"
    if os.path.isdir(build):
        return ""
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return ""
    return (f"bcc needs kernel headers and {build} is missing: install linux-headers-{release} "
            f"(or any kernel's headers and link {build} and /lib/modules/{release}/source to "
            f"them), or load the kheaders module")


def bpf_available() -> Optional[str]:
    """None when BPF tracing can run here, else why not (one line)."""
    if os.geteuid() != 0:
        return "BPF needs root"
    try:
        import bcc  # noqa: F401 (importable is all we ask)
    except ImportError:
        return ("bcc is not importable (Debian: apt-get install python3-bpfcc; from a venv, "
                "create it with --system-site-packages)")
    return None
