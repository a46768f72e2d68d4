"""Streaming a package's payload with libarchive: the kernel (or module) members written
to temp files, checked against the package's own digests, links followed inside the archive.

Guarantees (see the package docstring): one pass over the compressed input (two for a
backwards link); only wanted members are written, in 1 MiB blocks, to fresh temp files in
the caller's workdir; output names never come from member names; a member path or link that
escapes the archive root makes the whole input rejected; any failure removes what was
written and raises an `InputError` (`ArchiveError` for a damaged package) naming the file.
"""
from __future__ import annotations

import ctypes
import fcntl
import hashlib
import io
import os
import posixpath
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from typing import Callable, Optional

import libarchive
from libarchive import ffi as libarchive_ffi
from libarchive.exception import ArchiveError as LibarchiveError

from .. import quirks
from ..errors import ArchiveError
from . import deb, rpm
from .detect import KIND_TEXT, MODULE_PATTERN, module_name
from .types import ExtractedModule, ModuleMember

BLOCK = 1 << 20                  # bytes per read/write
MAGIC_PEEK = 8                   # bytes of a member looked at before it is written out
MAX_MEMBER_BYTES = 4 << 30       # a real debuginfo vmlinux is 0.5-1.5 GB
MAX_LINK_HOPS = 16
MAX_BACK_PASSES = 3            # re-reads of an archive for links pointing back


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def entry_blocks(entry):
    """`entry`'s data in BLOCK-sized memoryviews of one reused buffer, each valid until the
    next is asked for.  (libarchive-c's own `get_blocks`, over the same `read_data`, makes
    two more copies of every block: of a 600 MB member, a noticeable share of the time.)"""
    buf = ctypes.create_string_buffer(BLOCK)
    view = memoryview(buf).cast("B")
    read = libarchive_ffi.read_data
    archive_p = entry._archive_p
    while True:
        n = read(archive_p, buf, BLOCK)
        if n == 0:
            return
        yield view[:n]


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


@contextmanager
def threaded_xz(stream, path: str, threads: int):
    """The decompressed bytes of the .xz data in `stream`, from `xz -d -T N` (xz 5.4
    decodes the blocks of a multi-block file in parallel; Debian's data.tar.xz has 24 MiB
    blocks).  A feeder thread writes `stream` to xz; leaving the block stops xz.  Yields
    (readable pipe, check): `check()` raises ArchiveError if xz has found the data corrupt."""
    proc = subprocess.Popen(["xz", "-d", "-c", "-q", f"-T{threads}"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for pipe in (proc.stdin, proc.stdout):      # 1 MiB pipes: 16 times fewer switches
        try:
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, BLOCK)
        except OSError:                         # above /proc/sys/fs/pipe-max-size
            pass

    def feed():
        try:
            shutil.copyfileobj(stream, proc.stdin, BLOCK)
        except OSError:                 # xz stopped early (we left, or it failed)
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass
    feeder = threading.Thread(target=feed, name="xz-feed", daemon=True)
    feeder.start()

    def check(wait: float = 0):
        """After a libarchive error, give xz `wait` seconds to report its own."""
        if proc.poll() is None:
            try:
                proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                return                      # still decoding: we stopped reading early
        if proc.returncode > 0:
            lines = proc.stderr.read(4096).decode("utf-8", "replace").strip().splitlines()
            why = lines[-1] if lines else f"exit status {proc.returncode}"
            what = "truncated" if "unexpected end" in why.lower() else "corrupt"
            raise ArchiveError(f"{path}: {what} Debian package (xz: {why})")
    try:
        yield proc.stdout, check
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        feeder.join()
        for f in (proc.stdout, proc.stderr):
            f.close()


def xz_threads() -> int:
    """Threads for decompressing a .deb's data.tar.xz with the xz tool, 0 for libarchive's
    own single-threaded decoder (one core, or no xz)."""
    n = min(len(os.sched_getaffinity(0)), 4)
    return n if n > 1 and shutil.which("xz") else 0


class Package:
    """One package file and how to stream its payload archive."""

    def __init__(self, path: str, kind: str, progress: bool, magics: tuple = (),
                 magics_text: str = "", max_member_bytes: int = MAX_MEMBER_BYTES):
        self.path, self.kind, self.progress = path, kind, progress
        self.magics, self.magics_text = magics, magics_text
        self.max_member_bytes = max_member_bytes
        self.size = os.path.getsize(path)
        self._meta = ("", "")
        self._digests = None        # member -> (hash name, hex digest), read on first use
        self._ar = None             # .deb: its ar members
        self.unverified = False     # wrote a member the package lists no digest for
        if kind == "rpm":
            info = rpm.read_rpm_headers(path, self.size, lambda p: safe_member(path, p))
            self._meta, self._digests = (info.name, info.version), info.digests

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

    def _ar_member(self, prefix: str) -> tuple[str, int, int]:
        if self._ar is None:
            self._ar = deb.ar_members(self.path, self.size)
        return deb.ar_member(self.path, self._ar, prefix)

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
                    if name == "control":
                        fields = deb.control_fields(text)
                    else:
                        digests = {safe_member(self.path, p): ("md5", md5)
                                   for p, md5 in deb.md5sums(text)}
        self._meta = (fields.get("Package", ""), fields.get("Version", ""))
        self._digests = digests

    # -- streaming

    @contextmanager
    def _open(self, start: int, length: int, bar, xz: int = 0):
        """libarchive over bytes [start, start+length) of the package; `xz`: that range is
        .xz data to decompress with `xz -T xz` first (threaded_xz)."""
        fmt = "cpio" if self.kind == "rpm" else "tar"
        with open(self.path, "rb") as fh:
            stream = _Window(fh, start, length, bar)
            if not xz:
                try:
                    with libarchive.stream_reader(stream, format_name=fmt,
                                                  block_size=BLOCK) as archive:
                        yield archive
                except LibarchiveError as e:
                    raise ArchiveError(self._describe(e)) from None
                return
            with threaded_xz(stream, self.path, xz) as (plain, check):
                try:
                    with libarchive.stream_reader(plain, format_name=fmt,
                                                  block_size=BLOCK) as archive:
                        yield archive
                except LibarchiveError as e:
                    check(5)                # xz's own reason first
                    raise ArchiveError(self._describe(e)) from None
                check()

    def _describe(self, e: LibarchiveError) -> str:
        msg = str(e.msg).strip().rstrip(".")
        low = msg.lower()
        if "truncat" in low or "premature" in low or "unexpected end" in low:
            what = "truncated"
        elif "unrecognized archive format" in low:
            what = "unreadable"
        else:
            what = "corrupt"
        return f"{self.path}: {what} {KIND_TEXT[self.kind]} ({msg})"

    def _named(self, archive):
        """(normalised member path, entry) for each entry; ArchiveError on an unsafe path."""
        for entry in archive:
            yield safe_member(self.path, entry.pathname), entry

    @contextmanager
    def entries(self):
        """Stream the payload: yields an iterator of (member path, entry) pairs."""
        xz = 0
        if self.kind == "deb":
            member, start, length = self._ar_member("data.tar")
            xz = xz_threads() if member.endswith(".xz") else 0
        else:
            start, length = 0, self.size
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=self.size, initial=start, unit="B", unit_scale=True,
                       unit_divisor=1024, desc=os.path.basename(self.path), leave=False)
        try:
            with self._open(start, length, bar, xz) as archive:
                yield self._named(archive)
        finally:
            if bar is not None:
                bar.close()

    def write_entry(self, entry, name: str, workdir: str, prefix: str, suffix: str) -> str:
        """Copy `entry`'s data (member `name`) into a new temp file in `workdir`; returns its
        path.  The data is checked against the package's digest for `name` when it lists
        one; `self.unverified` is set otherwise.  Before anything big is written, its first
        bytes must be one of `self.magics` (a decompression bomb of zeros is refused at its
        first block), and no more than `self.max_member_bytes` are ever written."""
        algo, expect = self.digests().get(name, (None, None))
        digest = hashlib.new(algo) if algo else None
        cap = self.max_member_bytes
        if entry.size is not None and entry.size > cap:
            raise ArchiveError(f"{self.path}: member {name} is {entry.size} bytes, more than "
                               f"the limit of {cap} (raise it with --max-member-bytes)")
        fd, out = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=workdir)
        try:
            written = 0
            head = b""
            with os.fdopen(fd, "wb") as fh:
                for block in entry_blocks(entry):
                    if len(head) < MAGIC_PEEK:
                        head += bytes(block[:MAGIC_PEEK - len(head)])
                        if len(head) >= MAGIC_PEEK or written + len(block) >= (entry.size or 0):
                            self._check_magic(head, name)
                    fh.write(block)
                    if digest:
                        digest.update(block)
                    written += len(block)
                    if written > cap:
                        raise ArchiveError(f"{self.path}: member {name} inflates past the "
                                           f"limit of {cap} bytes (raise it with "
                                           f"--max-member-bytes)")
            if written != entry.size:
                raise ArchiveError(f"{self.path}: truncated {KIND_TEXT[self.kind]} (member "
                                 f"{name} has {written} of {entry.size} bytes)")
            if digest and digest.hexdigest() != expect.lower():
                raise ArchiveError(f"{self.path}: corrupt {KIND_TEXT[self.kind]} ({algo} of "
                                 f"member {name} is {digest.hexdigest()}, the package says "
                                 f"{expect})")
            self.unverified = self.unverified or digest is None
        except LibarchiveError as e:
            unlink_quietly(out)
            raise ArchiveError(self._describe(e)) from None
        except BaseException:
            unlink_quietly(out)
            raise
        return out

    def _check_magic(self, head: bytes, name: str) -> None:
        if self.magics and not head.startswith(self.magics):
            raise ArchiveError(f"{self.path}: member {name} is not {self.magics_text} (it starts "
                               f"with {head[:8].hex() or 'nothing'})")

    def _take(self, entries, entry, name: str, workdir: str, prefix: str, suffix: str) -> str:
        """write_entry, then, if the package had no digest for it, read to the end."""
        out = self.write_entry(entry, name, workdir, prefix, suffix)
        if self.unverified:
            try:
                self.drain(entries)
            except BaseException:
                unlink_quietly(out)
                raise
        return out

    def drain(self, entries) -> None:
        """Read the rest of the archive, so the decompressor reaches its end-of-stream
        checks; for members the package gives no digest for."""
        try:
            for _name, entry in entries:
                for _block in entry_blocks(entry):
                    pass
        except LibarchiveError as e:
            raise ArchiveError(self._describe(e)) from None

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
                            raise ArchiveError(f"{self.path}: member {name} is not a regular "
                                             f"file")
                        if entry.size == 0 and self.cpio:
                            pending, want_name = self._link_set(name, entry), name
                            continue
                        if entry.size == 0:
                            raise ArchiveError(f"{self.path}: member {name} is empty")
                        return name, self._take(entries, entry, name, workdir, prefix, suffix)
                    want, hops = self._follow(name, link), hops + 1
                    while seen.get(want) and hops <= MAX_LINK_HOPS:   # earlier link: follow
                        want, hops = self._follow(want, seen[want]), hops + 1
                    if hops > MAX_LINK_HOPS:
                        raise ArchiveError(f"{self.path}: too many levels of links at {name}")
                    if want in seen:
                        again = True    # the target went by already: read the archive again
                        break
            if not again:
                break
        if pending:
            raise ArchiveError(f"{self.path}: member {want_name} is empty")
        if want:
            raise ArchiveError(f"{self.path}: the kernel member is a link to {want}, which is "
                             f"not a file in this {KIND_TEXT[self.kind]}")
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
                        target = safe_member(self.path, entry.linkpath)
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
                    raise ArchiveError(f"{self.path}: module hard link to a missing member "
                                     f"{next(iter(back))}")
        except BaseException:
            for em in done.values():
                unlink_quietly(em.path)
            raise
        return list(done.values())

    # -- helpers of the two above

    @property
    def cpio(self) -> bool:
        """Hard-link sets keep their data in their last entry (quirks.py)."""
        return quirks.link_data_in_last_entry(self.kind)

    def _link_set(self, name: str, entry) -> str:
        """cpio: the name identifying an entry's hard link set (its first member's name)."""
        return safe_member(self.path, entry.linkpath) if entry.islnk else name

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
            raise ArchiveError(f"{self.path}: unsafe link {name} -> {target} (escapes the "
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


def safe_member(path: str, raw: str) -> str:
    """Member path normalised to 'usr/lib/...' form; ArchiveError if it escapes the root."""
    name = posixpath.normpath(raw.lstrip("/")) if raw else ""
    if name == ".." or name.startswith("../"):
        raise ArchiveError(f"{path}: unsafe member path {raw!r} (escapes the archive root)")
    return name
