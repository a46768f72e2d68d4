"""The full report on one Go executable: what a tracer needs to probe it.

    analyze_go_binary(path, symbols=None, offsets=None) -> GoReport
    analyze_pid(pid) -> GoReport      (/proc/PID/exe via /proc/PID/root, load bias from maps)
"""
from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional

from dbhive.elf import PF_W, ElfFile, find_all
from dbhive.errors import ElfError, InputError

from ..elfsyms import openssl_version, resolve_symbols
from . import buildinfo as bi
from . import quirks
from .dwarf import DwarfUnavailable, GoDwarf
from .moduledata import find_moduledata, itab_addresses
from .offsets import STANDARD_OFFSETS, resolve_offsets
from .typeinfo import TypeInfoError, open_descriptors
from .pclntab import MAGIC_118, MAGIC_120, MAGIC_116, MAGIC_12, PclntabError, find_pclntab, has_name_prefix
from .returns import ReturnsError, find_returns


class NotGoBinary(InputError):
    """The file is not a Go executable we can read (one-line message)."""


_T = "google.golang.org/grpc/internal/transport"
_XH = "golang.org/x/net/http2"
STANDARD_SYMBOLS: List[str] = [
    "runtime.casgstatus",
    "runtime.newproc1",
    "runtime.execute",
    "crypto/tls.(*Conn).Write",
    "crypto/tls.(*Conn).Read",
    "net/http.(*http2serverConn).writeHeaders",
    "net/http.(*http2serverConn).processHeaders",
    "net/http.(*http2clientConnReadLoop).handleResponse",
    "net/http.(*http2ClientConn).writeHeader",
    "net/http.(*http2ClientConn).writeHeaders",
    _XH + ".(*serverConn).writeHeaders",
    _XH + ".(*serverConn).processHeaders",
    _XH + ".(*clientConnReadLoop).handleResponse",
    _XH + ".(*ClientConn).writeHeader",
    _XH + ".(*ClientConn).writeHeaders",
    # Go 1.27: net/http's HTTP/2 lives in net/http/internal/http2
    "net/http/internal/http2.(*serverConn).writeHeaders",
    "net/http/internal/http2.(*serverConn).processHeaders",
    "net/http/internal/http2.(*clientConnReadLoop).handleResponse",
    "net/http/internal/http2.(*ClientConn).writeHeader",
    "net/http/internal/http2.(*ClientConn).writeHeaders",
    _T + ".(*loopyWriter).writeHeader",
    _T + ".(*http2Client).operateHeaders",
    _T + ".(*http2Server).operateHeaders",
]

# Itabs by type,interface.  The gRPC connection wrapper moved packages between releases.
STANDARD_ITABS: List[str] = [
    "*net.TCPConn,net.Conn",
    "*crypto/tls.Conn,net.Conn",
    "*google.golang.org/grpc/credentials/internal.syscallConn,net.Conn",
    "*google.golang.org/grpc/internal/credentials.syscallConn,net.Conn",
]

_MAGIC_MIN_MINOR = {MAGIC_12: (2, 15), MAGIC_116: (16, 17), MAGIC_118: (18, 19), MAGIC_120: (20, 10**6)}
_VERSION_RE = re.compile(rb"go1\.\d{1,3}(?:\.\d{1,3})?(?:(?:rc|beta)\d+)?(?: X:[\w,]+)?")


@dataclass
class GoReport:
    path: str
    arch: str
    pie: bool
    cgo: bool
    version: Optional[str]
    version_source: str
    pclntab: Dict[str, object]
    modules: Dict[str, object]
    symbols: Dict[str, Optional[dict]]
    offsets: Dict[str, dict]
    itabs: Dict[str, Optional[int]]
    load_bias: Optional[int] = None
    pid: Optional[int] = None
    openssl: List[dict] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    # The runtime type descriptors: whether they could be read, and how many of the
    # requested offsets they answered ("from_typeinfo": the reported value is theirs;
    # "typeinfo_answered": they gave a value, whichever source took precedence).
    typeinfo: Dict[str, object] = field(default_factory=dict)

    @property
    def version_tuple(self):
        return bi.parse_version(self.version) if self.version else None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self, indent: Optional[int] = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)


# --- version ----------------------------------------------------------------------------------

def _version_from_symtab(img: ElfFile) -> Optional[str]:
    sym = img.symbols(["runtime.buildVersion"], tables=(".symtab",)).get("runtime.buildVersion")
    if sym is None:
        return None
    words = img.read(sym.address, 2 * img.ptr_size)
    if words is None:
        return None
    ptr, n = struct.unpack(img.endian + ("QQ" if img.is64 else "II"), words)
    raw = img.read(ptr, n) if 0 < n < 128 else None
    if raw is None:
        return None
    text = raw.decode("utf-8", "replace")
    return text if bi.parse_version(text) else None


def _version_by_scan(img: ElfFile) -> Optional[str]:
    """runtime.buildVersion without symbols: a Go string header (ptr, len) in a writable
    segment that points at a complete `go1.N[.P]` string in a read-only one."""
    word = "Q" if img.is64 else "I"
    candidates = []
    for p in img.loads:
        if p.flags & PF_W:
            continue
        seg = bytes(img.segment_bytes(p))
        for m in _VERSION_RE.finditer(seg):
            candidates.append((p.vaddr + m.start(), m.group(0)))
    writable = [bytes(img.segment_bytes(p)) for p in img.loads if p.flags & PF_W]
    found = set()
    for addr, text in candidates:
        needle = struct.pack(img.endian + word, addr)
        for seg in writable:
            for i in find_all(seg, needle, img.ptr_size):
                if i + 2 * img.ptr_size > len(seg):
                    continue
                n = struct.unpack_from(img.endian + word, seg, i + img.ptr_size)[0]
                if 4 <= n <= len(text):
                    s = text[:n].decode()
                    if _VERSION_RE.fullmatch(text[:n]) and bi.parse_version(s):
                        found.add(s)
    return found.pop() if len(found) == 1 else None


def _consistent(version: str, magic: int) -> bool:
    v = bi.parse_version(version)
    lo, hi = _MAGIC_MIN_MINOR[magic]
    return v is not None and lo <= v[1] <= hi


# --- the report -------------------------------------------------------------------------------

def _func_table(img: ElfFile, tab, names: List[str]) -> Dict[str, tuple]:
    """{name: (entry, size, source)} from .symtab when present, else the pclntab."""
    out = {}
    abi = quirks.ASM_ABI_SUFFIX
    syms = img.symbols(names + [n + abi for n in names], tables=(".symtab",))
    for n in names:
        s = syms.get(n) or syms.get(n + abi)
        if s is not None and s.address and s.size:
            out[n] = (s.address, s.size, "symtab")
    missing = [n for n in names if n not in out]
    if missing and tab is not None:
        for n, f in tab.lookup(missing).items():
            out[n] = (f.entry, f.size, "pclntab")
    return out


def analyze_go_binary(path: str, symbols: Optional[Iterable[str]] = None,
                      offsets: Optional[Iterable[str]] = None,
                      itabs: Optional[Iterable[str]] = None) -> GoReport:
    """Everything the tracer needs about one Go executable.  Raises NotGoBinary or ElfError
    with a one-line message for files it cannot use."""
    img = ElfFile(path)
    warnings: List[str] = []
    try:
        tab = find_pclntab(img)
    except PclntabError as exc:
        tab = None
        pcln_error = str(exc)
    info = bi.read_buildinfo(img)
    if tab is None and info is None:
        raise NotGoBinary(f"{path}: not a Go binary ({pcln_error})")
    if tab is None:
        # it is Go (it has build info), but without its function table no symbol, RET
        # offset or itab can be found: an answer of "all absent" would be a wrong success
        raise PclntabError(f"{path}: a Go binary ({info.version or 'unknown version'}) whose "
                           f"pclntab cannot be read: {pcln_error}")

    # version
    version, source = None, "unknown"
    if info is not None and info.version:
        version, source = info.version, "buildinfo"
    else:
        version = _version_from_symtab(img)
        if version:
            source = "symtab:runtime.buildVersion"
        else:
            version = _version_by_scan(img)
            if version:
                source = "scan:runtime.buildVersion"
    if version and tab is not None and not _consistent(version, tab.magic):
        warnings.append(f"version {version} does not match the pclntab format ({tab.go_range})")
    if version and bi.parse_version(version) is None:
        warnings.append(f"unrecognised version string {version!r}")

    # functions and their returns
    names = list(STANDARD_SYMBOLS if symbols is None else symbols)
    funcs = _func_table(img, tab, names)
    sym_out: Dict[str, Optional[dict]] = {}
    for n in names:
        if n not in funcs:
            sym_out[n] = None
            continue
        entry, size, src = funcs[n]
        file_off = img.file_offset(entry)
        code = img.read(entry, size)
        try:
            rets = find_returns(img.arch, code or b"", entry, img.endian == ">")
            ret_offs = [img.file_offset(r) for r in rets]
        except ReturnsError as exc:
            ret_offs = None
            warnings.append(str(exc))
        sym_out[n] = {"address": entry, "file_offset": file_off, "size": size, "source": src,
                      "returns": ret_offs, "no_return": ret_offs == []}

    # struct offsets
    try:
        dwarf = GoDwarf(img)
    except DwarfUnavailable:
        dwarf = None
    deps = dict(info.deps) if info else {}
    md = find_moduledata(img, tab) if tab is not None else None
    types, types_reason = _descriptors(img, tab, md, version, info)
    keys = list(STANDARD_OFFSETS if offsets is None else offsets)
    off_out = resolve_offsets(keys, dwarf, version, deps, types, types_reason)
    for key, o in off_out.items():
        for src, val in (o.get("conflicts") or {}).items():
            warnings.append(f"offset {key}: {o['source']} says {o['offset']}, {src} says {val}")
    typeinfo = {"available": types is not None, "reason": types_reason,
                "typelinks": len(md.typelinks) if md else 0,
                "itabs": len(md.itablinks) if md else 0,
                "requested": len(keys),
                "from_typeinfo": sum(1 for o in off_out.values() if o["source"] == "typeinfo"),
                "typeinfo_answered": sum(1 for o in off_out.values() if o["source"] == "typeinfo"
                                         or "typeinfo" in (o.get("checked") or [])
                                         or "typeinfo" in (o.get("conflicts") or {}))}

    # itabs
    wanted_itabs = [quirks.strip_itab_prefix(x) for x in (STANDARD_ITABS if itabs is None else itabs)]
    itab_out = _itabs(img, tab, md, wanted_itabs, warnings)

    cgo = tab is not None and has_name_prefix(tab, ("_cgo_", "x_cgo_", "crosscall2", "runtime/cgo."))
    return GoReport(
        path=path, arch=img.arch, pie=img.is_pie, cgo=cgo, version=version,
        version_source=source,
        pclntab={"magic": tab.magic, "go_range": tab.go_range, "address": tab.vaddr,
                 "functions": tab.nfunc} if tab else {},
        modules=info.modules_json() if info else {},
        symbols=sym_out, offsets=off_out, itabs=itab_out, warnings=warnings, typeinfo=typeinfo)


def _descriptors(img: ElfFile, tab, md, version: Optional[str], info):
    """(typeinfo.Descriptors, None) or (None, why they cannot be read)."""
    if tab is None:
        return None, "no pclntab"
    if md is None:
        return None, "moduledata not found"
    try:
        experiments = info.settings.get("GOEXPERIMENT", "") if info else ""
        return open_descriptors(img, tab, md, version, experiments), None
    except TypeInfoError as exc:
        return None, str(exc)


def open_types(path: str):
    """(typeinfo.Descriptors, GoReport-style version) of a Go executable, for listing struct
    layouts (`resolver go --types`).  Raises NotGoBinary/GoFormatError/ElfError."""
    img = ElfFile(path)
    try:
        tab = find_pclntab(img)
    except PclntabError as exc:
        raise NotGoBinary(f"{path}: {exc}") from None
    info = bi.read_buildinfo(img)
    version = info.version if info and info.version else (_version_from_symtab(img)
                                                           or _version_by_scan(img))
    md = find_moduledata(img, tab)
    types, why = _descriptors(img, tab, md, version, info)
    if types is None:
        raise TypeInfoError(f"{path}: type descriptors unavailable ({why})")
    return types, version


def _itabs(img: ElfFile, tab, md, wanted: List[str], warnings: List[str]) -> Dict[str, Optional[int]]:
    out: Dict[str, Optional[int]] = {}
    spelled = [p + w for w in wanted for p in quirks.ITAB_PREFIXES]
    syms = img.symbols(spelled, tables=(".symtab",))
    for w in wanted:
        for p in quirks.ITAB_PREFIXES:
            s = syms.get(p + w)
            if s is not None:
                out[w] = s.address
                break
    missing = [w for w in wanted if w not in out]
    symtab = img.section(".symtab")
    if symtab is not None and symtab.link < len(img.sections):
        strtab = img.sections[symtab.link]
        names = bytes(img.section_bytes(strtab))
        if names.find(b"\0go:itab.") >= 0 or names.find(b"\0go.itab.") >= 0:
            missing = []        # the linker named every itab: absence is authoritative
    if missing and tab is not None:
        if md is None:
            warnings.append("moduledata not found: itabs of stripped binaries unavailable")
        else:
            found = itab_addresses(img, tab, md, missing)
            for w in missing:
                if w in found:
                    out[w] = found[w]
    return {w: out.get(w) for w in wanted}


# --- running processes ------------------------------------------------------------------------

def process_maps(pid: int) -> List[dict]:
    """The mappings of a process (/proc/PID/maps): [{start, end, perms, offset, path}].
    NotGoBinary (one line) when they cannot be read."""
    out = []
    try:
        with open(f"/proc/{pid}/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) < 5:
                    continue
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append({"start": lo, "end": hi, "perms": parts[1], "offset": int(parts[2], 16),
                            "path": parts[5].strip() if len(parts) > 5 else ""})
    except OSError as exc:
        raise NotGoBinary(f"pid {pid}: cannot read /proc/{pid}/maps: {exc.strerror}") from None
    return out


def analyze_pid(pid: int, symbols: Optional[Iterable[str]] = None,
                offsets: Optional[Iterable[str]] = None) -> GoReport:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError as exc:
        raise NotGoBinary(f"pid {pid}: cannot read /proc/{pid}/exe: {exc.strerror}") from None
    path = f"/proc/{pid}/root{exe}"
    if exe.endswith(" (deleted)") or not os.path.exists(path):
        path = f"/proc/{pid}/exe"
    report = analyze_go_binary(path, symbols, offsets)
    report.pid = pid
    maps = process_maps(pid)
    img = ElfFile(path)
    first_load = img.loads[0] if img.loads else None
    exe_maps = [m for m in maps if m["path"] in (exe, exe.replace(" (deleted)", ""))]
    if first_load is not None and exe_maps:
        m = min(exe_maps, key=lambda m: m["offset"])
        align = 0x1000
        report.load_bias = m["start"] - m["offset"] - (first_load.vaddr - first_load.offset) // align * align
        if not report.pie:
            report.load_bias = 0
    # OpenSSL: mapped libssl, or statically linked into the executable.
    seen = set()
    for m in maps:
        base = os.path.basename(m["path"])
        if base.startswith("libssl.so") and m["path"] not in seen:
            seen.add(m["path"])
            report.openssl.append(_openssl_entry(f"/proc/{pid}/root{m['path']}", m["path"]))
    if img.symbols(["SSL_write"]):
        report.openssl.append(_openssl_entry(path, exe, static=True))
    return report


def _openssl_entry(path: str, shown: str, static: bool = False) -> dict:
    try:
        img = ElfFile(path)
    except ElfError as exc:
        return {"path": shown, "error": str(exc)}
    return {"path": shown, "static": static, "version": openssl_version(img),
            "symbols": resolve_symbols(img, ["SSL_write", "SSL_read", "SSL_write_ex", "SSL_read_ex",
                                             "SSL_do_handshake", "SSL_set_fd"])}
