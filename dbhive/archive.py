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

import hashlib
import io
import os
import posixpath
import re
import shutil
import struct
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional, Union

import libarchive
from libarchive.exception import ArchiveError

from .elffile import ELF_MAGIC, InputError

__all__ = ["InputError", "Extracted", "ModuleMember", "ExtractedModule", "KINDS",
           "detect_input", "extract_kernel", "iter_modules", "extract_modules", "module_name"]

KINDS = ("rpm", "deb", "btf-archive", "elf", "raw-btf")     # what detect_input answers
PACKAGE_KINDS = ("rpm", "deb", "btf-archive")

KERNEL_MEMBER_PATTERNS = (
    re.compile(r"usr/lib/debug/boot/vmlinux-[^/]+"),
    re.compile(r"usr/lib/debug/lib/modules/[^/]+/vmlinux(\.debug)?"),
)
BTF_MEMBER_PATTERN = re.compile(r"([^/]+/)*[^/]+\.btf")
# kernel modules with debug info: foo.ko, foo.ko.debug (Fedora), compressed foo.ko.xz etc.
MODULE_PATTERN = re.compile(r"(?:[^/]+/)*([^/]+)\.ko(?:\.debug|\.xz|\.zst|\.gz)?")

BLOCK = 1 << 20                  # bytes per read/write
MAX_LINK_HOPS = 16
MAX_BACK_PASSES = 3            # re-reads of an archive for links pointing back

RPM_LEAD_MAGIC = b"\xed\xab\xee\xdb"
RPM_HEADER_MAGIC = b"\x8e\xad\xe8\x01"
AR_MAGIC = b"!<arch>\n"
BTF_MAGIC_LE = b"\x9f\xeb"
BTF_MAGIC_BE = b"\xeb\x9f"
COMPRESSED_MAGICS = (b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"\x1f\x8b", b"BZh")


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


# --------------------------------------------------------------------------- detection

def detect_input(path: str) -> str:
    """Classify `path` by its first bytes: 'rpm', 'deb', 'btf-archive', 'elf' or 'raw-btf'.
    InputError for a missing path, a directory, an empty or unrecognised file."""
    if os.path.isdir(path):
        raise InputError(f"{path}: is a directory, not a kernel package or file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as e:
        raise InputError(f"{path}: cannot open: {e.strerror}") from None
    if not head:
        raise InputError(f"{path}: empty file")
    if head.startswith(ELF_MAGIC):
        return "elf"
    if head.startswith(RPM_LEAD_MAGIC):
        return "rpm"
    if head.startswith(AR_MAGIC):
        return "deb"
    if head[:2] in (BTF_MAGIC_LE, BTF_MAGIC_BE) and len(head) >= 4 and head[2] == 1:
        return "raw-btf"
    if head.startswith(COMPRESSED_MAGICS) or head[257:262] == b"ustar":
        return "btf-archive"
    raise InputError(f"{path}: unsupported input format (not an RPM, .deb/.ddeb, "
                     f".btf.tar.*, ELF or raw BTF file; starts with {head[:8].hex()})")


# --------------------------------------------------------------------------- public API

def extract_kernel(path: str, workdir: str, progress: bool = False) -> Extracted:
    """Find the kernel in `path` and return where it is (see `Extracted`).

    For packages the vmlinux (or, for a btfhub archive, the .btf file) is streamed into a
    new temp file in `workdir`; the caller removes it (`Extracted.cleanup()`).  `progress`
    shows a tqdm bar of compressed input bytes consumed.  This finds the member a package
    declares as its kernel; whether that file really is a Linux kernel is checked by
    `dbhive.identity.kernel_identity`."""
    kind = detect_input(path)
    if kind not in PACKAGE_KINDS:
        return Extracted(path=path, member=None, package=None, kind=kind)
    pkg = _Package(path, kind, progress)
    if kind == "btf-archive":
        match = BTF_MEMBER_PATTERN.fullmatch
        what, suffix = "no .btf file", ".btf"
    else:
        match = _is_kernel_member
        what, suffix = ("no vmlinux (looked for usr/lib/debug/boot/vmlinux-<release> and "
                        "usr/lib/debug/lib/modules/<release>/vmlinux)"), ".vmlinux"
    member, out = pkg.extract_one(match, workdir, "kernel-", suffix)
    if member is None:
        raise InputError(f"{path}: {what} in this {_KIND_TEXT[kind]}")
    name, version = pkg.metadata()
    return Extracted(path=out, member=member, package=os.path.basename(path), kind=kind,
                     package_name=name, package_version=version, temporary=True)


def iter_modules(path: str, progress: bool = False) -> Iterator[ModuleMember]:
    """Yield every kernel module (`*.ko`, `*.ko.debug`, `*.ko.xz|zst|gz`) regular-file member
    of the package at `path`, in archive order, without extracting anything."""
    kind = detect_input(path)
    if kind not in ("rpm", "deb"):
        raise InputError(f"{path}: not a package (a {_KIND_TEXT[kind]}): no modules to list")
    pkg = _Package(path, kind, progress)
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
        raise InputError(f"{path}: not a package (a {_KIND_TEXT[kind]}): no modules to extract")
    if wanted is None:
        keep = lambda mm: True                                            # noqa: E731
    elif callable(wanted):
        keep = wanted
    else:
        names = {module_name(n) for n in wanted}
        keep = lambda mm: mm.name in names                                # noqa: E731
    return _Package(path, kind, progress).extract_modules(keep, workdir)


def module_name(file_stem: str) -> str:
    """Kernel module name from a file name stem: `nf-tables` -> `nf_tables`."""
    return file_stem.replace("-", "_")


# --------------------------------------------------------------------------- internals

_KIND_TEXT = {"rpm": "RPM package", "deb": "Debian package", "btf-archive": "BTF archive",
              "elf": "ELF file", "raw-btf": "raw BTF file"}


def _is_kernel_member(name: str) -> bool:
    return any(p.fullmatch(name) for p in KERNEL_MEMBER_PATTERNS)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _Window(io.RawIOBase):
    """A read-only stream over bytes [start, start+length) of an open file, reporting
    consumption to a tqdm bar (or None)."""

    def __init__(self, fh, start: int, length: int, bar):
        self._fh, self._left, self._bar = fh, length, bar
        fh.seek(start)

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        n = self._fh.readinto(view[:min(len(view), self._left)])
        self._left -= n
        if self._bar is not None:
            self._bar.update(n)
        return n


class _Package:
    """One package file and how to stream its payload archive."""

    def __init__(self, path: str, kind: str, progress: bool):
        self.path, self.kind, self.progress = path, kind, progress
        self.size = os.path.getsize(path)
        self._meta = ("", "")
        self._digests = None        # member -> (hash name, hex digest), read on first use
        self.unverified = False     # wrote a member the package lists no digest for
        if kind == "rpm":
            self._check_rpm()

    # -- metadata and whole-file checks

    def metadata(self) -> tuple[str, str]:
        """(package name, version) from the package's own headers ('' when unknown)."""
        if self.kind == "deb":
            self._deb_control()
        return self._meta

    def digests(self) -> dict:
        """{member: (hash name, hex digest)} as the package lists them (.deb: md5sums; RPM:
        the header's file digests; {} for a BTF archive)."""
        if self._digests is None:
            if self.kind == "deb":
                self._deb_control()
            else:
                self._digests = {}
        return self._digests

    def _check_rpm(self) -> None:
        """Read the RPM's signature and main headers: package name and version, the digest
        of every file, and the signature's size tag, so a truncated RPM is reported before
        decompressing anything."""
        with open(self.path, "rb") as fh:
            lead = fh.read(96)
            if len(lead) < 96:
                raise InputError(f"{self.path}: truncated RPM (lead cut short)")
            sig = _rpm_header(fh, self.path, "signature")
            fh.seek(-fh.tell() % 8, os.SEEK_CUR)        # the main header is 8-aligned
            main_start = fh.tell()
            main = _rpm_header(fh, self.path, "main")
        # RPMSIGTAG_LONGSIZE (270) / RPMSIGTAG_SIZE (1000): main header + payload bytes
        total = sig.get(270, sig.get(1000, [None]))[0]
        if total is not None and main_start + total > self.size:
            raise InputError(f"{self.path}: truncated RPM ({self.size} bytes, its header "
                             f"says {main_start + total})")
        first = lambda tag: (main.get(tag) or [""])[0]                    # noqa: E731
        version = f"{first(1001)}-{first(1002)}" if first(1001) else ""
        self._meta = (first(1000), version)                 # NAME, VERSION-RELEASE
        # file digests: FILEDIGESTS (1035) parallel to DIRINDEXES (1116) / BASENAMES (1117)
        # into DIRNAMES (1118); FILEDIGESTALGO (5011): 1 md5 (the default), 8 sha256, ...
        algo = _RPM_DIGEST_ALGOS.get(first(5011) or 1)
        names = [d + b for d, b in zip((main[1118][i] for i in main.get(1116, [])),
                                       main.get(1117, []))] if 1118 in main else []
        if algo:
            self._digests = {_safe_member(self.path, n): (algo, d)
                             for n, d in zip(names, main.get(1035, [])) if d}

    def _ar_members(self) -> list[tuple[str, int, int]]:
        """(name, offset, size) of each member of the .deb's ar archive."""
        members = []
        with open(self.path, "rb") as fh:
            if fh.read(8) != AR_MAGIC:
                raise InputError(f"{self.path}: not an ar archive")
            pos = 8
            while True:
                hdr = fh.read(60)
                if not hdr:
                    break
                if len(hdr) < 60 or hdr[58:60] != b"`\n":
                    raise InputError(f"{self.path}: truncated or damaged .deb (bad ar member "
                                     f"header at byte {pos})")
                name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
                try:
                    size = int(hdr[48:58].decode("ascii").strip())
                except ValueError:
                    raise InputError(f"{self.path}: damaged .deb (bad size in ar member "
                                     f"{name!r})") from None
                start = pos + 60
                if start + size > self.size:
                    raise InputError(f"{self.path}: truncated .deb (member {name} needs "
                                     f"{size} bytes, {self.size - start} left)")
                members.append((name, start, size))
                pos = start + size + (size & 1)
                fh.seek(pos)
        return members

    def _ar_member(self, prefix: str) -> tuple[str, int, int]:
        for m in self._ar_members():
            if m[0] == prefix or m[0].startswith(prefix + "."):
                return m
        raise InputError(f"{self.path}: not a Debian package (no {prefix}.* member)")

    def _deb_control(self) -> None:
        """Package name and version from control.tar's `control`, file md5s from its
        `md5sums` (paths relative to the root, as in data.tar)."""
        if self._digests is not None:
            return
        fields, digests = {}, {}
        with self._open(*self._ar_member("control.tar")[1:], bar=None) as archive:
            for name, entry in self._named(archive):
                if name in ("control", "md5sums") and entry.isreg:
                    text = b"".join(entry.get_blocks()).decode("utf-8", "replace")
                    for line in text.splitlines():
                        if name == "control":
                            key, sep, value = line.partition(":")
                            if sep and not key.startswith((" ", "\t")):
                                fields[key.strip()] = value.strip()
                        elif len(line) > 34:             # "<32 hex>  <path>"
                            digests[_safe_member(self.path, line[34:])] = ("md5", line[:32])
        self._meta = (fields.get("Package", ""), fields.get("Version", ""))
        self._digests = digests

    # -- streaming

    @contextmanager
    def _open(self, start: int, length: int, bar):
        fmt = "cpio" if self.kind == "rpm" else "tar"
        with open(self.path, "rb") as fh:
            stream = _Window(fh, start, length, bar)
            try:
                with libarchive.stream_reader(stream, format_name=fmt,
                                              block_size=BLOCK) as archive:
                    yield archive
            except ArchiveError as e:
                raise InputError(self._describe(e)) from None

    def _describe(self, e: ArchiveError) -> str:
        msg = str(e.msg).strip().rstrip(".")
        low = msg.lower()
        if "truncat" in low or "premature" in low or "unexpected end" in low:
            what = "truncated"
        elif "unrecognized archive format" in low:
            what = "unreadable"
        else:
            what = "corrupt"
        return f"{self.path}: {what} {_KIND_TEXT[self.kind]} ({msg})"

    def _named(self, archive):
        """(normalised member path, entry) for each entry; InputError on an unsafe path."""
        for entry in archive:
            yield _safe_member(self.path, entry.pathname), entry

    @contextmanager
    def entries(self):
        """Stream the payload: yields an iterator of (member path, entry) pairs."""
        if self.kind == "deb":
            _, start, length = self._ar_member("data.tar")
        else:
            start, length = 0, self.size
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.size, initial=start, unit="B", unit_scale=True,
                       unit_divisor=1024, desc=os.path.basename(self.path), leave=False)
        try:
            with self._open(start, length, bar) as archive:
                yield self._named(archive)
        finally:
            if bar is not None:
                bar.close()

    def write_entry(self, entry, name: str, workdir: str, prefix: str, suffix: str) -> str:
        """Copy `entry`'s data (member `name`) into a new temp file in `workdir`; returns its
        path.  The data is checked against the package's digest for `name` when it lists
        one; `self.unverified` is set otherwise."""
        algo, expect = self.digests().get(name, (None, None))
        digest = hashlib.new(algo) if algo else None
        fd, out = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=workdir)
        try:
            written = 0
            with os.fdopen(fd, "wb") as fh:
                for block in entry.get_blocks(BLOCK):
                    fh.write(block)
                    if digest:
                        digest.update(block)
                    written += len(block)
            if written != entry.size:
                raise InputError(f"{self.path}: truncated {_KIND_TEXT[self.kind]} (member "
                                 f"{name} has {written} of {entry.size} bytes)")
            if digest and digest.hexdigest() != expect.lower():
                raise InputError(f"{self.path}: corrupt {_KIND_TEXT[self.kind]} ({algo} of "
                                 f"member {name} is {digest.hexdigest()}, the package says "
                                 f"{expect})")
            self.unverified = self.unverified or digest is None
        except ArchiveError as e:
            _unlink(out)
            raise InputError(self._describe(e)) from None
        except BaseException:
            _unlink(out)
            raise
        return out

    def _take(self, entries, entry, name: str, workdir: str, prefix: str, suffix: str) -> str:
        """write_entry, then, if the package had no digest for it, read to the end."""
        out = self.write_entry(entry, name, workdir, prefix, suffix)
        if self.unverified:
            try:
                self.drain(entries)
            except BaseException:
                _unlink(out)
                raise
        return out

    def drain(self, entries) -> None:
        """Read the rest of the archive, so the decompressor reaches its end-of-stream
        checks; for members the package gives no digest for."""
        try:
            for _name, entry in entries:
                for _block in entry.get_blocks(BLOCK):
                    pass
        except ArchiveError as e:
            raise InputError(self._describe(e)) from None

    def extract_one(self, match: Callable[[str], object], workdir: str, prefix: str,
                    suffix: str) -> tuple[Optional[str], Optional[str]]:
        """Extract the first member whose path satisfies `match`, following links inside the
        archive.  Returns (member, output path), or (None, None) if nothing matches.

        A symlink, or a tar hard link (a data-less entry naming an earlier member), makes
        its target the member we want next; if the target already went by, the archive is
        read again (at most MAX_BACK_PASSES more times).  In cpio (RPM) a hard link set
        keeps its data in its last entry: a wanted empty entry waits for that one."""
        want = None             # after a link: the exact member we need next
        hops = 0
        seen = {}               # member -> link target, or None for a file (links may point back)
        pending = want_name = None
        for _ in range(1 + MAX_BACK_PASSES):
            again = False
            pending = None      # cpio link set (its first name) whose data we wait for
            with self.entries() as entries:
                for name, entry in entries:
                    if pending and entry.size and self._link_set(name, entry) == pending:
                        return want_name, self._take(entries, entry, want_name, workdir,
                                                     prefix, suffix)
                    link = self._link_target(name, entry)
                    if not (name == want if want else match(name)):
                        seen[name] = link
                        continue
                    if link is None:
                        if not entry.isreg:
                            raise InputError(f"{self.path}: member {name} is not a regular "
                                             f"file")
                        if entry.size == 0 and self.cpio:
                            pending, want_name = self._link_set(name, entry), name
                            continue
                        if entry.size == 0:
                            raise InputError(f"{self.path}: member {name} is empty")
                        return name, self._take(entries, entry, name, workdir, prefix, suffix)
                    want, hops = self._follow(name, link), hops + 1
                    while seen.get(want) and hops <= MAX_LINK_HOPS:   # earlier link: follow
                        want, hops = self._follow(want, seen[want]), hops + 1
                    if hops > MAX_LINK_HOPS:
                        raise InputError(f"{self.path}: too many levels of links at {name}")
                    if want in seen:
                        again = True    # the target went by already: read the archive again
                        break
            if not again:
                break
        if pending:
            raise InputError(f"{self.path}: member {want_name} is empty")
        if want:
            raise InputError(f"{self.path}: the kernel member is a link to {want}, which is "
                             f"not a file in this {_KIND_TEXT[self.kind]}")
        return None, None

    def extract_modules(self, keep: Callable[[ModuleMember], bool], workdir: str
                        ) -> list[ExtractedModule]:
        """Write each wanted module (see the module-level `extract_modules`).  Hard-linked
        modules get the data of their link set: cpio keeps it in the set's last entry, tar
        in the first (copied if we wrote it, else fetched by a second pass)."""
        done: dict[str, ExtractedModule] = {}     # member -> output
        waiting: dict[str, list] = {}             # cpio link set -> wanted empty members
        back: dict[str, list] = {}                # tar link target that went by -> members
        try:
            with self.entries() as entries:
                for name, entry in entries:
                    mm = self._module(name, entry, keep)
                    if self.cpio and (entry.isreg or entry.islnk):
                        group = self._link_set(name, entry)
                        if entry.size == 0:
                            if mm:
                                waiting.setdefault(group, []).append(mm)
                            continue
                        mms = ([mm] if mm else []) + waiting.pop(group, [])
                        self._emit(entry, mms, workdir, done)
                    elif mm and entry.islnk and entry.size == 0:
                        target = _safe_member(self.path, entry.linkpath)
                        if target in done:
                            self._emit(None, [mm], workdir, done, copy_of=done[target].path)
                        else:
                            back.setdefault(target, []).append(mm)
                    elif mm:
                        self._emit(entry, [mm], workdir, done)
            for mms in waiting.values():            # empty files after all
                self._emit(None, mms, workdir, done)
            if back:
                with self.entries() as entries:
                    for name, entry in entries:
                        if name in back and entry.size:
                            self._emit(entry, back.pop(name), workdir, done)
                if back:
                    raise InputError(f"{self.path}: module hard link to a missing member "
                                     f"{next(iter(back))}")
        except BaseException:
            for em in done.values():
                _unlink(em.path)
            raise
        return list(done.values())

    # -- helpers of the two above

    @property
    def cpio(self) -> bool:
        return self.kind == "rpm"

    def _link_set(self, name: str, entry) -> str:
        """cpio: the name identifying an entry's hard link set (its first member's name)."""
        return _safe_member(self.path, entry.linkpath) if entry.islnk else name

    def _link_target(self, name: str, entry) -> Optional[str]:
        """Member a symlink or (tar) data-less hard link points to, else None.  Not checked
        here: links we do not follow may point anywhere."""
        if entry.issym:
            raw = entry.linkpath or ""
            joined = raw if raw.startswith("/") else posixpath.join(posixpath.dirname(name), raw)
        elif entry.islnk and entry.size == 0 and not self.cpio:
            joined = entry.linkpath or ""   # hard links name a member path, not a relative one
        else:
            return None
        return posixpath.normpath(joined.lstrip("/"))

    def _follow(self, name: str, target: str) -> str:
        """`target` of link `name`, refused if it leaves the archive root."""
        if target == ".." or target.startswith("../"):
            raise InputError(f"{self.path}: unsafe link {name} -> {target} (escapes the "
                             f"archive root)")
        return target

    @staticmethod
    def _module(name: str, entry, keep) -> Optional[ModuleMember]:
        m = MODULE_PATTERN.fullmatch(name)
        if not m or not (entry.isreg or entry.islnk):
            return None
        mm = ModuleMember(name, module_name(m.group(1)))
        return mm if keep(mm) else None

    def _emit(self, entry, mms: list, workdir: str, done: dict, copy_of: str = "") -> None:
        """Write `entry`'s data (or a copy of file `copy_of`, or nothing: an empty file) for
        each module in `mms`: the data is read once, further ones are copies."""
        for mm in mms:
            if entry is not None:
                out = self.write_entry(entry, mm.member, workdir, f"{mm.name}-", ".ko")
                entry, copy_of = None, out
            else:
                fd, out = tempfile.mkstemp(prefix=f"{mm.name}-", suffix=".ko", dir=workdir)
                os.close(fd)
                if copy_of:
                    shutil.copyfile(copy_of, out)
            done[mm.member] = ExtractedModule(mm.member, mm.name, out)


_RPM_DIGEST_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512",
                     11: "sha224"}


def _rpm_header(fh, path: str, which: str) -> dict:
    """Read one RPM header structure at the file position: {tag: [values]} for the number,
    string and string-array tags (binary ones are skipped)."""
    head = fh.read(16)
    if len(head) < 16 or head[:4] != RPM_HEADER_MAGIC:
        raise InputError(f"{path}: truncated or damaged RPM ({which} header missing)")
    nindex, hsize = struct.unpack(">II", head[8:16])
    index, store = fh.read(16 * nindex), fh.read(hsize)
    if len(index) != 16 * nindex or len(store) != hsize:
        raise InputError(f"{path}: truncated RPM ({which} header cut short)")
    tags = {}
    for i in range(nindex):
        tag, typ, off, count = struct.unpack_from(">IIII", index, 16 * i)
        if typ in _RPM_INT_FORMATS:
            fmt = ">%d%s" % (count, _RPM_INT_FORMATS[typ])
            if off + struct.calcsize(fmt) <= hsize:
                tags[tag] = list(struct.unpack_from(fmt, store, off))
        elif typ in (6, 8, 9):              # STRING, STRING_ARRAY, I18NSTRING
            values = store[off:].split(b"\0", count)[:count]
            tags[tag] = [v.decode("utf-8", "replace") for v in values]
    return tags


_RPM_INT_FORMATS = {2: "B", 3: "H", 4: "I", 5: "Q"}     # INT8, INT16, INT32, INT64


def _safe_member(path: str, raw: str) -> str:
    """Member path normalised to 'usr/lib/...' form; InputError if it escapes the root."""
    name = posixpath.normpath(raw.lstrip("/")) if raw else ""
    if name == ".." or name.startswith("../"):
        raise InputError(f"{path}: unsafe member path {raw!r} (escapes the archive root)")
    return name
