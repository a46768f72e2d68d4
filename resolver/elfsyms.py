"""`resolver elf`: any ELF's symbols with their file offsets (what uprobes want), and the
OpenSSL version a library or a static executable carries.  Reading the ELF itself is the
project's one ELF layer, `dbhive.elf`."""
from __future__ import annotations

import os
import re
from typing import Dict, Iterable, Optional

from dbhive.elf import PF_W, PF_X, SHT_NOBITS, ElfFile
from dbhive.errors import ElfError, InputError

__all__ = ["ElfFile", "ElfError", "resolve_symbols", "openssl_version", "has_openssl"]


# --- any-ELF symbol report --------------------------------------------------------------------

def resolve_symbols(img: ElfFile, names: Iterable[str]) -> Dict[str, Optional[dict]]:
    """{name: {"address", "file_offset", "size", "table"} or None when absent}."""
    names = list(names)
    syms = img.symbols(names)
    out: Dict[str, Optional[dict]] = {}
    for n in names:
        s = syms.get(n)
        if s is None or s.address == 0:
            out[n] = None
            continue
        out[n] = {"address": s.address, "file_offset": img.file_offset(s.address),
                  "size": s.size, "table": s.table}
    return out


_OPENSSL_RE = re.compile(rb"OpenSSL (\d+\.\d+\.\d+[a-z]?)(?:[-+][\w.]+)? +\d{1,2} [A-Z][a-z]{2} \d{4}")


def openssl_version(img: ElfFile) -> Optional[dict]:
    """OpenSSL's version as the library states it ("OpenSSL 3.0.17 1 Jul 2025").

    libssl keeps no version string of its own: then the libcrypto it needs (DT_NEEDED, same
    directory, which OpenSSL ships in lockstep) is read.  Returns {"version", "text",
    "source"} or None when there is no OpenSSL version string to be found.
    """
    found = _own_openssl_version(img)
    if found is not None:
        return found
    for lib in img.needed():
        if lib.startswith("libcrypto.so"):
            cand = os.path.join(os.path.dirname(os.path.realpath(img.path)), lib)
            try:
                with ElfFile(cand) as lib_img:
                    found = _own_openssl_version(lib_img)
            except InputError:
                continue
            if found is not None:
                found["source"] = f"version-string:{cand}"
                return found
    return None


# bytes searched for the version string (libcrypto's .rodata is ~1 MB; a static binary's
# read-only data tens of MB)
MAX_VERSION_SCAN = 256 << 20


def _own_openssl_version(img: ElfFile) -> Optional[dict]:
    """The version string in .rodata, else in the read-only loaded segments (stripped
    section headers); never more than MAX_VERSION_SCAN bytes are searched."""
    sec = img.section(".rodata")
    if sec is not None and sec.type != SHT_NOBITS:
        regions = [(sec.offset, sec.size)]
    else:
        regions = [(p.offset, p.filesz) for p in img.loads if not p.flags & (PF_W | PF_X)]
    budget = MAX_VERSION_SCAN
    for offset, size in regions:
        size = min(size, budget, max(0, img.size - offset))
        budget -= size
        m = _OPENSSL_RE.search(img.data, offset, offset + size) if size > 0 else None
        if m:
            return {"version": m.group(1).decode(), "text": m.group(0).decode(),
                    "source": "version-string"}
        if budget <= 0:
            break
    return None


def has_openssl(img: ElfFile) -> bool:
    """The ELF defines OpenSSL's SSL_write (statically linked or libssl itself)."""
    return bool(img.symbols(["SSL_write", "SSL_read"]))
