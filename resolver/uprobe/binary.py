"""A user-space binary to put uprobes in: where it is, where its DWARF is, where a function
is in the file.

    b = UserBinary.open("libc")                     # found as the dynamic loader would
    b.path                                          # /lib/x86_64-linux-gnu/libc.so.6
    b.function("fputs")                             # FuncSite(file_offset=..., ...)
    b.types()                                       # a resolver TypeSource over its DWARF

Finding the file (the surftrace client's order): an absolute path; a path relative to the
current directory; a command on $PATH; a library name (`libc`, `libssl.so.3`) looked up in
the ldconfig cache (`ldconfig -p`), keeping the entries of the binary's own ABI.

Its DWARF: the file's own, else a separate debug file named by its GNU build-id,
`<debug dir>/.build-id/ab/cdef….debug` (default debug dir /usr/lib/debug, as gdb's), whose
build-id must be the binary's.  Types are read by the project's one DWARF reader
(`dbhive.dwarf.read_dwarf`) into the shared model and queried through the resolver's
`GraphSource`, as a kernel's are.

A function's uprobe address is its **file offset** (vaddr - segment vaddr + segment offset),
computed from the binary's own program headers, as `resolver elf` does.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from dbhive.elf import ET_DYN, ET_EXEC, STT_FUNC, ElfFile, Symbol
from dbhive.errors import InputError, NoSuchFunction

DEFAULT_DEBUG_DIRS = ("/usr/lib/debug",)
STT_GNU_IFUNC = 10
ARCHES = ("x86_64", "aarch64")
# what `ldconfig -p` prints for each ABI's entries (glibc's ldconfig.c flag names)
_LDCONFIG_ABI = {"x86_64": "x86-64", "aarch64": "AArch64"}
_LDCONFIG_TIMEOUT = 20
MAX_LDCONFIG_OUTPUT = 16 << 20


class NoSuchBinary(InputError):
    """The binary or library named in a uprobe expression cannot be found."""


class NoDebugInfo(InputError):
    """The binary has no DWARF and no debug file can be found for it."""


@dataclass(frozen=True)
class FuncSite:
    """Where a function is: its symbol, address and the file offset a uprobe takes."""
    name: str               # as asked
    symbol: str             # the ELF symbol found
    table: str              # ".symtab" / ".dynsym", and of which file
    address: int            # the function's (the symbol's value)
    size: int
    plus: int               # bytes into the function (`func+0x10`)
    file_offset: int        # of address + plus: what the uprobe takes

    def as_dict(self) -> dict:
        return {"symbol": self.symbol, "table": self.table, "address": self.address,
                "size": self.size, "plus": self.plus, "file_offset": self.file_offset}


# --- finding the file --------------------------------------------------------------------------

def ldconfig_cache(abi: Optional[str] = None) -> List[Tuple[str, str, str]]:
    """[(soname, flags, path)] of the dynamic loader's cache (`ldconfig -p`), in its order;
    with `abi` (x86_64, aarch64) only that ABI's entries."""
    exe = shutil.which("ldconfig") or shutil.which("ldconfig", path="/sbin:/usr/sbin")
    if exe is None:
        raise NoSuchBinary("no ldconfig on this machine to look libraries up in its cache")
    try:
        p = subprocess.run([exe, "-p"], capture_output=True, timeout=_LDCONFIG_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise NoSuchBinary(f"{exe} -p did not answer within {_LDCONFIG_TIMEOUT} s") from None
    if p.returncode != 0:
        raise NoSuchBinary(f"{exe} -p failed: {p.stderr.decode(errors='replace').strip()}")
    out = []
    want = _LDCONFIG_ABI.get(abi or "")
    for line in p.stdout[:MAX_LDCONFIG_OUTPUT].decode(errors="replace").splitlines():
        m = re.match(r"\s+(\S+) \(([^)]*)\)(?: OS ABI: [^=]*)? => (\S+)$", line)
        if not m:
            continue
        name, flags, path = m.groups()
        if want is not None and want not in flags.split(","):
            continue
        out.append((name, flags, path))
    return out


def _lib_matches(spec: str, soname: str) -> bool:
    """`libc` matches libc.so.6 (the client's rule: the name before `.so`); `libc.so.6`
    only itself; `libssl.so` libssl.so.3 and libssl.so."""
    if spec == soname:
        return True
    if ".so" not in spec:
        return soname.split(".so", 1)[0] == spec
    return soname.startswith(spec + ".")


def find_library(spec: str, abi: Optional[str] = None) -> str:
    """The path of a library named without a directory, as the dynamic loader's cache
    has it for this machine's ABI.  NoSuchBinary when none or several distinct match."""
    abi = abi or os.uname().machine
    entries = ldconfig_cache(abi)
    exact = [p for (n, _f, p) in entries if n == spec]
    found = exact or [p for (n, _f, p) in entries if _lib_matches(spec, n)]
    # libssl.so (the -dev link) and libssl.so.3 are one file: keep the soname, the name the
    # loader maps
    by_file: Dict[str, str] = {}
    for p in found:
        real = os.path.realpath(p)
        if real not in by_file or len(os.path.basename(p)) > len(os.path.basename(by_file[real])):
            by_file[real] = p
    distinct = list(by_file.values())
    if not distinct:
        raise NoSuchBinary(f"{spec}: no such file, command or library (not in the ldconfig "
                           f"cache for {abi})")
    if len(distinct) > 1:
        names = ", ".join(os.path.basename(p) for p in distinct)
        raise NoSuchBinary(f"{spec}: several libraries match ({names}): name one")
    return distinct[0]


def locate(spec: str, cwd: Optional[str] = None) -> str:
    """The absolute path of the binary a uprobe expression names (see the module doc)."""
    if not spec:
        raise NoSuchBinary("empty binary name in the uprobe expression")
    cwd = cwd or os.getcwd()
    if spec.startswith("/"):
        if not os.path.exists(spec):
            raise NoSuchBinary(f"{spec}: no such file")
        return os.path.abspath(spec)
    rel = os.path.join(cwd, spec)
    if os.path.isfile(rel):
        return os.path.abspath(rel)
    if "/" in spec:
        raise NoSuchBinary(f"{spec}: no such file (relative to {cwd})")
    cmd = shutil.which(spec)
    if cmd is not None:
        return os.path.abspath(cmd)
    return find_library(spec)


def debug_file_path(build_id: str, debug_dirs=DEFAULT_DEBUG_DIRS) -> Optional[str]:
    """The first `<dir>/.build-id/ab/cdef….debug` that exists, or None."""
    if len(build_id) < 4:
        return None
    for d in debug_dirs:
        p = os.path.join(d, ".build-id", build_id[:2], build_id[2:] + ".debug")
        if os.path.isfile(p):
            return p
    return None


# --- the binary --------------------------------------------------------------------------------

class UserBinary:
    """One ELF executable or shared library (and its separate debug file, when it has one)."""

    def __init__(self, path: str, spec: str, debug_dirs=DEFAULT_DEBUG_DIRS):
        self.path = path
        self.spec = spec
        self.debug_dirs = tuple(debug_dirs)
        self.img = ElfFile(path)
        if self.img.type not in (ET_EXEC, ET_DYN):
            self.img.close()
            raise InputError(f"{path}: an ELF {self.img.elf_type} file, not an executable or "
                             f"shared library")
        self.arch = self.img.uname_machine
        if self.arch not in ARCHES:
            self.img.close()
            raise InputError(f"{path}: uprobe expressions support x86_64 and aarch64 binaries, "
                             f"not {self.arch or 'machine ' + str(self.img.machine)}")
        self.build_id = self.img.build_id
        self._debug: Optional[ElfFile] = None
        self._debug_looked = False
        self._types = None
        self._syms: Optional[Dict[str, Symbol]] = None

    @classmethod
    def open(cls, spec: str, debug_dirs=DEFAULT_DEBUG_DIRS, cwd: Optional[str] = None):
        return cls(locate(spec, cwd), spec, debug_dirs)

    def close(self) -> None:
        self.img.close()
        if self._debug is not None:
            self._debug.close()

    # ---- debug information ------------------------------------------------------------------
    def has_own_dwarf(self) -> bool:
        return self.img.has_section(".debug_info") or self.img.has_section(".zdebug_info")

    def debug_file(self) -> Optional[ElfFile]:
        """The separate debug file found by build-id (checked to carry the same build-id)."""
        if not self._debug_looked:
            self._debug_looked = True
            p = debug_file_path(self.build_id, self.debug_dirs) if self.build_id else None
            if p is not None:
                dbg = ElfFile(p)
                if dbg.build_id != self.build_id:
                    dbg.close()
                    raise InputError(f"{p}: its build-id {dbg.build_id or '(none)'} is not "
                                     f"{self.path}'s {self.build_id}")
                self._debug = dbg
        return self._debug

    def dwarf_path(self) -> Optional[str]:
        if self.has_own_dwarf():
            return self.path
        dbg = self.debug_file()
        if dbg is not None and (dbg.has_section(".debug_info") or dbg.has_section(".zdebug_info")):
            return dbg.path
        return None

    def no_dwarf_error(self, why: str) -> NoDebugInfo:
        where = " or ".join(os.path.join(d, ".build-id", "…") for d in self.debug_dirs)
        bid = f"build-id {self.build_id}" if self.build_id else "no build-id"
        return NoDebugInfo(f"{self.path}: no DWARF debug info ({bid}; no debug file under "
                           f"{where}), needed {why}")

    def types(self, why: str = "for the arguments' types"):
        """The binary's types as a resolver TypeSource (read once).  NoDebugInfo without DWARF."""
        if self._types is None:
            from dbhive.dwarf import read_dwarf
            from ..kernel import GraphSource
            path = self.dwarf_path()
            if path is None:
                raise self.no_dwarf_error(why)
            graph = read_dwarf(path, module=os.path.basename(self.path))
            meta = {"release": self.path, "arch": self.arch, "build_id": self.build_id,
                    "type_source": "dwarf", "source_file": path}
            self._types = GraphSource(graph, path, meta, label="dwarf")
        return self._types

    # ---- symbols ------------------------------------------------------------------------------
    def _symbol_tables(self) -> List[Tuple[str, ElfFile, tuple]]:
        out = [("", self.img, (".symtab", ".dynsym"))]
        dbg = self.debug_file()
        if dbg is not None:
            out.append((dbg.path, dbg, (".symtab",)))
        return out

    def symbol(self, name: str) -> Optional[Tuple[Symbol, str]]:
        """(symbol, which file) of a defined function symbol, the binary's tables first."""
        for where, img, tables in self._symbol_tables():
            s = img.symbols([name], tables=tables).get(name)
            if s is not None and s.address:
                return s, where
        return None

    def aliases(self, address: int) -> List[str]:
        """Names of every function symbol at `address` (the binary's and its debug file's):
        C libraries define one function under several names (fputs = _IO_fputs)."""
        names: List[str] = []
        for _where, img, tables in self._symbol_tables():
            for n, s in img.symbols(None, tables=tables).items():
                if s.address == address and s.type in (STT_FUNC, STT_GNU_IFUNC) and n not in names:
                    names.append(n)
        return names

    def function(self, name: str, plus: int = 0) -> FuncSite:
        """Where function `name` (+`plus` bytes) is.  NoSuchFunction when no symbol names it."""
        found = self.symbol(name)
        if found is None:
            raise NoSuchFunction(f"{name}: no such function in {self.path}"
                                 + ("" if self.debug_file() else
                                    " (its symbol tables; no debug file found)"))
        sym, where = found
        if sym.type == STT_GNU_IFUNC:
            raise NoSuchFunction(f"{name} in {self.path} is an IFUNC: a probe on it fires in "
                                 f"its resolver, not on calls; probe the implementation it "
                                 f"picks instead")
        if sym.type != STT_FUNC:
            raise NoSuchFunction(f"{name} in {self.path} is not a function (symbol type "
                                 f"{sym.type})")
        if plus and sym.size and plus >= sym.size:
            raise NoSuchFunction(f"{name}+{plus:#x}: past the end of {name} "
                                 f"({sym.size} bytes)")
        off = self.img.file_offset(sym.address + plus)
        if off is None:
            raise NoSuchFunction(f"{name} in {self.path}: address {sym.address:#x} is in no "
                                 f"loaded segment of the file")
        table = sym.table if not where else f"{sym.table} of {where}"
        return FuncSite(name, sym.name, table, sym.address, sym.size, plus, off)

    # ---- Go -----------------------------------------------------------------------------------
    def is_go(self) -> bool:
        img = self.img
        if any(img.has_section(s) for s in (".gopclntab", ".data.rel.ro.gopclntab",
                                             ".go.buildinfo", ".note.go.buildid")):
            return True
        if not img.sections:          # section headers removed: look for the tables
            from ..golang.pclntab import PclntabError, find_pclntab
            try:
                find_pclntab(img)
                return True
            except PclntabError:
                return False
        return False
