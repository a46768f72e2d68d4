"""Which kernel a file is: release, arch, build-id, flavour — read from the kernel's own data.

ELF kernels (vmlinux):
  release   from the `Linux version <release> (` banner in `.rodata` (the bytes of
            `linux_banner`, found by scanning the section); else from `init_uts_ns` (its
            `new_utsname.release` field, located through the symbol table).  Only if the file
            has neither (an `objcopy --only-keep-debug` file whose data sections are NOBITS)
            is the release taken from a name: the archive member / file name
            `vmlinux-<release>[.debug]` or `.../modules/<release>/vmlinux`.  `release_source`
            says which: 'banner', 'init_uts_ns' or 'file-name'.
  arch      e_machine in `uname -m` spelling (x86_64, aarch64, ppc64le, s390x, ...)
  build_id  the GNU build-id note (hex) — what /sys/kernel/notes holds on the running kernel
  elf_type  'EXEC', 'DYN', 'REL'; has_btf (`.BTF`), has_debug_info (`.debug_info`)

Raw BTF (no ELF around it; see `raw_btf_identity`):
  /sys/kernel/btf/vmlinux   the running kernel's identity (`running_kernel_identity`)
  other files               the release from the file name: btfhub `<release>.btf[.tar.xz]`,
                            or `vmlinux-<release>.btf`; arch from a btfhub directory
                            (`.../x86_64/`, `.../arm64/`) or a `.x86_64`-style release
                            suffix; no build-id.  `btf_sha256` records the blob's sha256.

Flavour rule (`kernel_flavour`):
  'debug'  if the package is a `*-debug-*` one (`kernel-debug-debuginfo`), or the release
           says so (`+debug`, `.debug`: Fedora / RHEL debug kernels; quirks.py);
  else     the part after the last `+` (RHEL `+rt`, `+64k`), or the Debian/Ubuntu/SUSE
           suffix after the ABI number (`6.1.0-47-cloud-amd64` -> `cloud-amd64`,
           `5.15.0-91-generic` -> `generic`, `5.14.21-150500.55.39-default` -> `default`);
  else     'default' (`5.14.0-362.el9.x86_64`).
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Optional
from . import quirks
from .archive.detect import detect_input
from .elf import ElfFile, build_id_from_notes, open_regular
from .errors import DbhiveError, InputError

SYS_BTF = "/sys/kernel/btf/vmlinux"
SYS_NOTES = "/sys/kernel/notes"

_BANNER = re.compile(rb"Linux version ([^\s%()]+) \(")
_BTFHUB_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "arm64": "aarch64",
                "aarch64": "aarch64", "s390x": "s390x", "ppc64le": "ppc64le"}
_RELEASE_ARCH = re.compile(r"\.(x86_64|aarch64|ppc64le|s390x|i686)(?:\+\w+)?$")


@dataclass(frozen=True)
class KernelIdentity:
    release: str
    arch: str
    build_id: str = ""           # hex; '' when unknown (raw BTF from a file)
    flavour: str = "default"
    elf_type: str = ""           # '' for raw BTF
    has_btf: bool = False
    has_debug_info: bool = False
    source: str = "elf"          # 'elf' or 'raw-btf'
    release_source: str = ""     # 'banner', 'init_uts_ns', 'file-name', 'uname'
    btf_sha256: str = ""         # raw BTF input only

    def as_meta(self) -> dict[str, str]:
        """Flat string map for a DB's meta table (booleans '1'/'0')."""
        out = {}
        for key, value in asdict(self).items():
            if isinstance(value, bool):
                value = "1" if value else "0"
            out[key] = value
        return out


def kernel_identity(path: str, name_hint: str = "", package_name: str = "") -> KernelIdentity:
    """Identity of a kernel ELF (vmlinux) or raw BTF file.

    `name_hint`: the archive member the file came from (only used as the last resort for
    the release, see the module doc); `package_name`: the package's own name, for the debug
    flavour.  InputError if `path` is an ELF that is not a Linux kernel."""
    kind = detect_input(path)
    if kind == "raw-btf":
        return raw_btf_identity(path, name_hint)
    if kind != "elf":
        raise InputError(f"{path}: a {kind} input, not a kernel file: extract it first "
                         f"(dbhive.archive.extract_kernel)")
    with ElfFile(path) as elf:
        names = {s.name for s in elf.sections}
        release, how = _release_from_elf(elf, path)
        if not release:
            if ".gnu.linkonce.this_module" in names or ".modinfo" in names:
                raise InputError(f"{path}: a kernel module, not a Linux kernel image")
            if not ({"__ksymtab", "__param"} <= names or "__ksymtab_strings" in names):
                raise InputError(f"{path}: not a Linux kernel (no 'Linux version' banner, no "
                                 f"init_uts_ns, no kernel sections)")
            release = release_from_name(name_hint) or release_from_name(path)
            how = "file-name"
            if not release:
                raise InputError(f"{path}: Linux kernel without a readable release (data "
                                 f"sections stripped) and no vmlinux-<release> file name")
        return KernelIdentity(
            release=release,
            arch=elf.uname_machine,
            build_id=elf.build_id,
            flavour=kernel_flavour(release, package_name),
            elf_type=elf.elf_type,
            has_btf=".BTF" in names,
            has_debug_info=".debug_info" in names,
            source="elf",
            release_source=how,
        )


def identify(path: str, workdir: str, progress: bool = False,
             max_member_bytes: Optional[int] = None):
    """extract_kernel + kernel_identity, removing the extracted file if it is no kernel.
    Returns (dbhive.archive.Extracted, KernelIdentity)."""
    from .archive import extract_kernel
    ex = extract_kernel(path, workdir, progress, max_member_bytes)
    hint = ex.member or ""
    if ex.kind == "btf-archive":        # btfhub: the arch is the archive's directory name
        hint = os.path.join(os.path.dirname(os.path.abspath(path)), ex.member)
    try:
        with about_member(ex, path):
            ident = kernel_identity(ex.path, hint, ex.package_name)
    except BaseException:
        ex.cleanup()
        raise
    return ex, ident


@contextlib.contextmanager
def about_member(ex, package_path: str):
    """Errors about an extracted member's temp file name the package and the member
    instead (the temp file is gone by the time the user reads the message)."""
    try:
        yield
    except DbhiveError as e:
        if not ex.temporary or ex.path not in str(e):
            raise
        text = str(e).replace(ex.path, f"{package_path} (member {ex.member})")
        raise type(e)(text) from None


def running_kernel_identity() -> KernelIdentity:
    """The running kernel: `uname -r`, `uname -m`, build-id from /sys/kernel/notes."""
    uts = os.uname()
    try:
        with open(SYS_NOTES, "rb") as fh:
            build_id = build_id_from_notes(fh.read(), sys.byteorder == "little")
    except OSError:
        build_id = ""
    return KernelIdentity(release=uts.release, arch=uts.machine, build_id=build_id,
                          flavour=kernel_flavour(uts.release), source="raw-btf",
                          has_btf=os.path.exists(SYS_BTF), release_source="uname")


def raw_btf_identity(path: str, name_hint: str = "") -> KernelIdentity:
    """Identity for a raw BTF file (see the module doc for where each field comes from).
    `name_hint`: the name (and directory, for the arch) to read instead of `path`'s, e.g.
    the btfhub archive's `.../x86_64/<release>.btf` for a file extracted from it."""
    sha = file_sha256(path)
    if os.path.realpath(path) == SYS_BTF:
        run = running_kernel_identity()
        return KernelIdentity(**{**asdict(run), "btf_sha256": sha, "has_btf": True})
    release = release_from_name(name_hint) or release_from_name(path)
    if not release:
        raise InputError(f"{path}: raw BTF whose kernel release is unknown (name it "
                         f"<release>.btf, as btfhub does)")
    parent = os.path.basename(os.path.dirname(os.path.abspath(name_hint or path)))
    m = _RELEASE_ARCH.search(release)
    arch = _BTFHUB_ARCH.get(parent) or (m.group(1) if m else "")
    return KernelIdentity(release=release, arch=arch, flavour=kernel_flavour(release),
                          has_btf=True, source="raw-btf", release_source="file-name",
                          btf_sha256=sha)


# `uname -m` spellings of 32-bit machines; every other arch has 8-byte pointers


def kernel_flavour(release: str, package_name: str = "") -> str:
    """See the module doc for the rule."""
    if quirks.package_says_debug(package_name) or quirks.release_says_debug(release):
        return "debug"
    if "+" in release:
        return release.rsplit("+", 1)[1]
    m = re.fullmatch(r"\d+\.\d+(?:\.\d+)?-[\d.]+-([A-Za-z][\w.-]*)", release)
    return m.group(1) if m else "default"


class Sha256Later:
    """file_sha256(path), computed meanwhile: in a forked process at nice 19 where forking
    is safe, else in a thread at nice 19.  Either way the hash takes the moments a core
    would idle (the serial steps of a build) rather than slowing the DWARF workers.  A
    process, because a thread needs the GIL between blocks, and the DWARF scan holds it
    for a whole unit at a time: the thread's hash of a 600 MB vmlinux finished only after
    the 3 s read.  Calling the object gives the hex digest (or raises what the hashing
    raised); `close()` stops the work if it is no longer needed."""

    def __init__(self, path: str):
        from . import procs
        self._child = self._thread = None
        self._box: dict = {}
        if procs.can_fork():
            self._child = procs.Forked(f"{path}: sha256", _file_sha256_checked, path, nice=19)
            return

        def work():
            try:
                _lowest_priority()
                self._box["sha"] = file_sha256(path)
            except BaseException as e:             # re-raised in the caller's thread
                self._box["error"] = e
        self._thread = threading.Thread(target=work, name="sha256", daemon=True)
        self._thread.start()

    def __call__(self) -> str:
        if "sha" not in self._box and "error" not in self._box:
            if self._child is not None:
                child, self._child = self._child, None
                self._box["sha"] = child.wait()
            else:
                self._thread.join()
        if "error" in self._box:
            raise self._box["error"]
        return self._box["sha"]

    def close(self) -> None:
        if self._child is not None:
            self._child.kill()
            self._child = None


def _file_sha256_checked(path: str) -> str:
    # in the child: an OSError comes back as the one-line error it is, not as a bug
    try:
        return file_sha256(path)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _lowest_priority() -> None:
    """This thread at nice 19 (Linux sets it per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def file_sha256(path: str) -> str:
    """sha256 (hex) of a file, read in 1 MiB blocks."""
    import hashlib                     # here: OpenSSL's start-up costs every command ~40 ms
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- internals

def _release_from_elf(elf: ElfFile, path: str) -> tuple[str, str]:
    rodata = elf.section(".rodata")
    if rodata is not None:
        try:
            data = elf.section_data(".rodata")
        except InputError:              # SHT_NOBITS: a debug-only file
            data = None
        m = _BANNER.search(data) if data else None
        if m:
            return m.group(1).decode("ascii", "replace"), "banner"
    release = _release_from_uts(elf)
    return (release, "init_uts_ns") if release else ("", "")


# struct new_utsname: six char[65] fields (sysname "Linux", nodename, release, ...)
_UTS_FIELD = 65
_UTS_RELEASE = 2 * _UTS_FIELD


def _release_from_uts(elf: ElfFile) -> str:
    """init_uts_ns.name.release: the utsname starts the struct (5.x+) or follows a 4-byte
    kref (older kernels; 8 with padding)."""
    sym = elf.symbols(["init_uts_ns"], tables=(".symtab",)).get("init_uts_ns")
    raw = elf.symbol_bytes(sym) if sym is not None else None
    if not raw:
        return ""
    for base in quirks.UTS_NS_UTSNAME_OFFSETS:
        if raw[base:base + 6] == b"Linux\0":
            field = raw[base + _UTS_RELEASE:base + _UTS_RELEASE + _UTS_FIELD]
            return field.split(b"\0", 1)[0].decode("ascii", "replace")
    return ""


def release_from_name(name: str) -> str:
    """The release a file or member name claims ('' if none): from `vmlinux-<rel>[.debug]`, `modules/<rel>/vmlinux`, `<rel>.btf[.tar.xz]`."""
    if not name:
        return ""
    base = os.path.basename(name)
    # the .btf spelling first: `vmlinux-<release>.btf` is a BTF file's name, not a release
    for pattern in (r"(?:vmlinux-)?(.+?)\.btf(?:\.tar\.\w+)?", r"vmlinux-(.+?)(?:\.debug)?"):
        m = re.fullmatch(pattern, base)
        if m:
            return m.group(1)
    m = re.search(r"modules/([^/]+)/vmlinux(?:\.debug)?$", name)
    return m.group(1) if m else ""
