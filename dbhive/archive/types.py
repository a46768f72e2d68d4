"""What extraction returns."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional


@dataclass
class Extracted:
    """Where the kernel of an input ended up.

    path      the vmlinux / .btf file to read: a temp file in the workdir for packages,
              the input itself for 'elf' and 'raw-btf' (then `temporary` is False)
    member    the archive member it came from (after following symlinks), else None
    package   the input's file name for packages, else None
    kind      detect_input's answer
    package_name, package_version   from the package's own metadata (RPM header NAME,
              VERSION-RELEASE; .deb control Package, Version); '' when not a package
    """
    path: str
    member: Optional[str]
    package: Optional[str]
    kind: str
    package_name: str = ""
    package_version: str = ""
    temporary: bool = False

    def cleanup(self) -> None:
        """Remove the extracted temp file (never the caller's own input)."""
        if self.temporary:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


@dataclass(frozen=True)
class ModuleMember:
    member: str       # archive member path, e.g. usr/lib/debug/lib/modules/R/kernel/fs/ext4/ext4.ko
    name: str         # module name as the kernel spells it (dashes become underscores): ext4


@dataclass(frozen=True)
class ExtractedModule:
    member: str
    name: str
    path: str         # temp file in the workdir
