"""Find the kernel (vmlinux or BTF) in an input file and stream it out of its package.

Inputs (`detect_input` names them):
  'rpm'          an RPM (`kernel-debuginfo-*.rpm`): lead + headers + a cpio payload compressed
                 with xz, zstd, gzip or bzip2.  libarchive reads it directly.
  'deb'          a Debian .deb or Ubuntu .ddeb: an `ar` archive whose `data.tar[.xz|.zst|.gz|
                 .bz2]` member is a tar.  We read the ar headers ourselves and hand libarchive
                 just that member's byte range of the file; data.tar is never written out.
  'btf-archive'  a btfhub `<release>.btf.tar.xz` (any tar, compressed or not) holding one
                 `<release>.btf` raw BTF file.
  'elf'          an ELF file (a vmlinux already on disk); used in place.
  'raw-btf'      a raw BTF blob (/sys/kernel/btf/vmlinux, /usr/lib/btf/vmlinux-R.btf);
                 used in place.

Where the kernel is in a package (member paths compared without a leading "./" or "/"):
  usr/lib/debug/boot/vmlinux-<release>[.debug]          (Debian, Ubuntu, SUSE)
  usr/lib/debug/lib/modules/<release>/vmlinux[.debug]   (Fedora, RHEL, ...; Ubuntu too)
The first member matching either is taken.  If it is a symlink (or an empty hardlink), the
link is resolved inside the archive and the target member is extracted; a target that came
earlier in the stream is fetched with a second pass over the archive.

Kernel modules (`iter_modules`, `extract_modules`): regular and hard-linked members named
`*.ko`, `*.ko.debug`, `*.ko.xz|zst|gz` anywhere in an RPM or .deb (symlinks are not listed;
compressed modules are written as they are, not decompressed).

Guarantees:
  * streaming: one pass over the compressed input (two for a backwards symlink); only the
    wanted member is written, in 1 MiB blocks, to a fresh temp file in the caller's workdir;
  * output names never come from member names, and members whose path or link target
    escapes the archive root ('../evil') make the whole input rejected;
  * every failure is an `InputError` with a one-line message naming the file, and any
    partial output is removed.

Integrity: the extracted member is checked against the digest the package itself lists for
it (.deb: control.tar's md5sums; RPM: the header's file digests, sha256 in current RPMs), and
reading stops once it is written: damage further down the package is then not noticed, and
not relevant.  A member without a listed digest (btfhub archives) is followed by reading the
archive to its end, so the decompressor's own end-of-stream checks run.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Iterator, Optional, Union

from ..errors import ArchiveError, InputError
from ..elf import ELF_MAGIC
from .detect import (BTF_MAGIC_BE, BTF_MAGIC_LE, BTF_MEMBER_PATTERN, COMPRESSED_MAGICS, KIND_TEXT,
                     KINDS, MODULE_PATTERN, PACKAGE_KINDS, detect_input, is_kernel_member,
                     module_name)
from .types import Extracted, ExtractedModule, ModuleMember

__all__ = ["InputError", "ArchiveError", "Extracted", "ModuleMember", "ExtractedModule", "KINDS",
           "detect_input", "extract_kernel", "iter_modules", "extract_modules", "module_name"]

# The streaming code (libarchive) is imported by the functions that stream, so that
# `detect_input` and the types stay cheap to import.


def extract_kernel(path: str, workdir: str, progress: bool = False,
                   max_member_bytes: Optional[int] = None) -> Extracted:
    """Find the kernel in `path` and return where it is (see `Extracted`).

    For packages the vmlinux (or, for a btfhub archive, the .btf file) is streamed into a
    new temp file in `workdir`; the caller removes it (`Extracted.cleanup()`).  `progress`
    shows a tqdm bar of compressed input bytes consumed.  This finds the member a package
    declares as its kernel; whether that file really is a Linux kernel is checked by
    `dbhive.identity.kernel_identity`.  The member must start like one (ELF or BTF magic)
    and be at most `max_member_bytes` (default stream.MAX_MEMBER_BYTES)."""
    kind = detect_input(path)
    if kind not in PACKAGE_KINDS:
        return Extracted(path=path, member=None, package=None, kind=kind)
    from .stream import MAX_MEMBER_BYTES, Package
    if kind == "btf-archive":
        magics, magics_text = (BTF_MAGIC_LE, BTF_MAGIC_BE), "raw BTF"
    else:
        magics, magics_text = (ELF_MAGIC,), "an ELF file"
    pkg = Package(path, kind, progress, magics, magics_text,
                  max_member_bytes or MAX_MEMBER_BYTES)
    if kind == "btf-archive":
        match = BTF_MEMBER_PATTERN.fullmatch
        what, suffix = "no .btf file", ".btf"
    else:
        match = is_kernel_member
        what, suffix = ("no vmlinux (looked for usr/lib/debug/boot/vmlinux-<release> and "
                        "usr/lib/debug/lib/modules/<release>/vmlinux)"), ".vmlinux"
    member, out = pkg.extract_one(match, workdir, "kernel-", suffix)
    if member is None:
        raise InputError(f"{path}: {what} in this {KIND_TEXT[kind]}")
    name, version = pkg.metadata()
    return Extracted(path=out, member=member, package=os.path.basename(path), kind=kind,
                     package_name=name, package_version=version, temporary=True)


def iter_modules(path: str, progress: bool = False) -> Iterator[ModuleMember]:
    """Yield every kernel module (`*.ko`, `*.ko.debug`, `*.ko.xz|zst|gz`) regular-file member
    of the package at `path`, in archive order, without extracting anything."""
    kind = detect_input(path)
    if kind not in ("rpm", "deb"):
        raise InputError(f"{path}: not a package (a {KIND_TEXT[kind]}): no modules to list")
    from .stream import Package
    pkg = Package(path, kind, progress)
    with pkg.entries() as entries:
        for name, entry in entries:
            m = MODULE_PATTERN.fullmatch(name)
            if m and entry.isreg:
                yield ModuleMember(name, module_name(m.group(1)))


def extract_modules(path: str, workdir: str,
                    wanted: Union[None, Iterable[str], Callable[[ModuleMember], bool]] = None,
                    progress: bool = False) -> list[ExtractedModule]:
    """Extract kernel modules from the package at `path` into temp files in `workdir`, in one
    pass.  `wanted`: None (all), a collection of module names (`ext4`, `nf_tables`: either
    spelling of dashes/underscores) or a predicate on `ModuleMember`.  Compressed modules
    (.ko.xz ...) are written as they are.  On error nothing is left behind."""
    kind = detect_input(path)
    if kind not in ("rpm", "deb"):
        raise InputError(f"{path}: not a package (a {KIND_TEXT[kind]}): no modules to extract")
    if wanted is None:
        keep = lambda mm: True                                            # noqa: E731
    elif callable(wanted):
        keep = wanted
    else:
        names = {module_name(n) for n in wanted}
        keep = lambda mm: mm.name in names                                # noqa: E731
    from .stream import Package
    return Package(path, kind, progress, (ELF_MAGIC,) + COMPRESSED_MAGICS,
                   "an ELF or compressed module").extract_modules(keep, workdir)
