"""Real RPM fixtures made by Debian's rpmbuild (scripts/make_rpm_fixture.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from scripts.realdata import DEBIAN_RELEASE
from tests.support import need_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODDIR = f"usr/lib/debug/lib/modules/{DEBIAN_RELEASE}"
KO = {"aegis128_aesni": f"{MODDIR}/kernel/arch/x86/crypto/aegis128-aesni.ko",
      "crc32c_intel": f"{MODDIR}/kernel/arch/x86/crypto/crc32c-intel.ko"}


def make_rpms(which: str) -> dict[str, str]:
    """Run the fixture script; {label: path}, the label of kernel-debuginfo-6.1.0-47.X.x86_64.rpm
    being X, of other packages their whole NAME-VERSION-RELEASE."""
    need_tool("rpmbuild")
    out = subprocess.run([sys.executable, "-m", "scripts.make_rpm_fixture", which], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout.split()
    label = lambda p: os.path.basename(p)[:-len(".x86_64.rpm")].replace(   # noqa: E731
        "kernel-debuginfo-6.1.0-47.", "")
    return {label(p): p for p in out}
