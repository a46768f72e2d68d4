"""Finding kernel modules on disk, and opening compressed ones.

    find_modules(["./ko/", "extra.ko.xz"]) -> [ModuleFile, ...]   (sorted by path)

A directory is walked recursively (symlinked directories are not entered, so a
/lib/modules/<release> tree's `build`/`source` links are left alone) for `*.ko`,
`*.ko.debug`, `*.ko.xz`, `*.ko.zst` and `*.ko.gz`; a file named explicitly is taken
whatever its name, and may also be a module's raw split BTF (`/sys/kernel/btf/<module>` on a
kernel with modules; its name is the module's).  The same file reached twice (a symlink) counts once; two files that are
the same module name are refused, naming both.

Compressed modules (xz, zstd, gzip: recognised by their magic bytes, not by the name) are
decompressed by libarchive into a temp file (the readers map files), at most
MAX_MODULE_BYTES; the original client's 32-file / 16 MiB limits were upload limits and do
not apply here (Debian's `bridge.ko` with its DWARF is 12.6 MB, `mlx5_core.ko` 56 MB).
"""
from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Optional

from ..archive.detect import module_name
from ..elf import ELF_MAGIC, open_regular
from ..errors import ArchiveError, InputError

MODULE_FILE = re.compile(r"(.+?)\.ko(?:\.debug|\.xz|\.zst|\.gz)?")
BTF_MAGICS = (b"\x9f\xeb\x01", b"\xeb\x9f\x01")
MAX_MODULE_BYTES = 4 << 30
MAX_MODULES = 100_000
COMPRESSION_MAGICS = {b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zst", b"\x1f\x8b": "gz"}
BLOCK = 1 << 20


@dataclass(frozen=True)
class ModuleFile:
    path: str                 # as found (absolute)
    name: str                 # module name from the file name (dashes as underscores)
    compression: Optional[str] = None     # 'xz', 'zst', 'gz' or None
    raw_btf: bool = False     # a raw (split) BTF file, not an ELF module


def compression_of(path: str) -> Optional[str]:
    """'xz' / 'zst' / 'gz' for a compressed file, None for anything else (from its
    magic bytes).  InputError for a missing file or one that is not a regular file."""
    with open_regular(path, "kernel module") as fh:
        head = fh.read(8)
    for magic, kind in COMPRESSION_MAGICS.items():
        if head.startswith(magic):
            return kind
    return None


def _stem_name(path: str) -> str:
    base = os.path.basename(path)
    m = MODULE_FILE.fullmatch(base)
    return module_name(m.group(1) if m else base.split(".", 1)[0])


def find_modules(paths: Iterable[str]) -> list:
    """Every module file under `paths` (files or directories), sorted by path."""
    found: dict = {}                    # realpath -> ModuleFile
    for p in paths:
        if os.path.isdir(p):
            for d, dirs, files in os.walk(p):      # symlinked dirs: in `dirs`, not walked
                dirs.sort()
                for f in sorted(files):
                    if MODULE_FILE.fullmatch(f):
                        _add(found, os.path.join(d, f))
                if len(found) > MAX_MODULES:
                    raise InputError(f"{p}: more than {MAX_MODULES} module files")
        elif os.path.lexists(p):
            _add(found, p, explicit=True)
        else:
            raise InputError(f"{p}: no such file or directory")
    mods = sorted(found.values(), key=lambda m: m.path)
    by_name: dict = {}
    for m in mods:
        other = by_name.setdefault(m.name, m)
        if other is not m:
            raise InputError(f"two files are module {m.name}: {other.path} and {m.path} "
                             f"(keep one)")
    return mods


def _add(found: dict, path: str, explicit: bool = False) -> None:
    real = os.path.realpath(path)
    if real in found:
        return
    if not explicit and not os.path.isfile(real):
        return                          # a dangling link or a special file in a tree
    kind = compression_of(path)
    raw_btf = False
    if kind is None and explicit:
        with open_regular(path, "kernel module") as fh:
            head = fh.read(4)
        raw_btf = head[:3] in BTF_MAGICS
        if head != ELF_MAGIC and not raw_btf:
            raise InputError(f"{path}: not a kernel module (neither ELF, raw BTF nor xz, "
                             f"zstd or gzip compressed)")
    found[real] = ModuleFile(os.path.abspath(path), _stem_name(path), kind, raw_btf)


@contextmanager
def opened(mf: ModuleFile, workdir: str, limit: int = MAX_MODULE_BYTES) -> Iterator[str]:
    """The path of `mf` as a plain ELF file: the file itself, or its decompressed copy in
    `workdir` (at most `limit` bytes; removed on exit)."""
    if mf.compression is None:
        yield mf.path
        return
    fd, tmp = tempfile.mkstemp(prefix=f"{mf.name}-", suffix=".ko", dir=workdir)
    try:
        with os.fdopen(fd, "wb") as out:
            decompress(mf.path, out, limit)
        yield tmp
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def decompress(path: str, out, limit: int = MAX_MODULE_BYTES) -> int:
    """Write the decompressed contents of `path` to file `out`; bytes written.
    InputError for damaged data or more than `limit` bytes."""
    import libarchive
    from libarchive.exception import ArchiveError as LibarchiveError
    total = 0
    try:
        with libarchive.file_reader(path, "raw", block_size=BLOCK) as archive:
            for entry in archive:
                for block in entry.get_blocks(BLOCK):
                    total += len(block)
                    if total > limit:
                        raise InputError(f"{path}: decompresses to more than {limit} bytes: "
                                         f"refused (the limit is --max-module-bytes)")
                    out.write(block)
                break
    except LibarchiveError as e:
        raise ArchiveError(f"{path}: damaged compressed module "
                           f"({str(e.msg).strip().rstrip('.')})") from None
    if total == 0:
        raise InputError(f"{path}: decompresses to nothing")
    return total
