"""The running kernel as the tracer sees it: can we run here, where might its BTF be, and the
machine set-up bcc needs (tracefs, kernel headers)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import List, Optional

from dbhive.elf import is_elf  # noqa: F401  (the tracer's modules import it from here)
from dbhive.errors import UnsupportedKernel

MIN_KERNEL = (4, 14)
ARCHES = ("x86_64", "aarch64")
SYS_BTF = "/sys/kernel/btf/vmlinux"


@dataclass
class Running:
    release: str
    machine: str
    version: tuple
    build_id: Optional[str]


def parse_release(release: str) -> Optional[tuple]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def running() -> Running:
    from dbhive.identity import running_kernel_identity
    k = running_kernel_identity()
    return Running(k.release, k.arch, parse_release(k.release) or (0, 0), k.build_id or None)


def check_supported(k: Running) -> None:
    """Refuse kernels older than 4.14 and machines other than x86_64/aarch64."""
    if k.machine not in ARCHES:
        raise UnsupportedKernel(f"{k.machine} is not supported (x86_64 and aarch64 only)")
    if k.version < MIN_KERNEL:
        raise UnsupportedKernel(f"kernel {k.release} is older than 4.14, the oldest the "
                                f"tracer supports")


def btf_places(release: str) -> List[str]:
    """Every place a kernel's BTF may already be (shared/docs/formats.md), in order."""
    return [SYS_BTF,
            f"/usr/lib/btf/vmlinux-{release}.btf",
            f"/boot/vmlinux-{release}",
            f"/lib/modules/{release}/vmlinux",
            f"/usr/lib/debug/boot/vmlinux-{release}",
            f"/usr/lib/debug/lib/modules/{release}/vmlinux"]


# ---- what bcc needs ------------------------------------------------------------------------

def tracefs() -> str:
    """The tracefs directory (tracepoint ids and formats live there), mounted if needed."""
    from resolver.tracefs import tracefs_dir
    return tracefs_dir("events")


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
