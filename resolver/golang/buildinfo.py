"""Go build info: the `\\xff Go buildinf:` blob the linker writes into `.go.buildinfo`.

Header (32 bytes, 16-byte aligned): 14-byte magic, pointer size (byte 14), flags (byte 15:
bit 0 big-endian, bit 1 inline strings).  Go 1.18+ (inline): two uvarint-length-prefixed
strings (version, modinfo) right after the header.  Older (pointer format): at +16 two
pointers, each to a Go string header (data pointer, length).
modinfo is wrapped in 16 sentinel bytes on each side; its lines are tab separated.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from dbhive.elf import PF_W, PF_X, ElfFile
from dbhive.leb128 import uleb128

MAGIC = b"\xff Go buildinf:"
SEARCH_LIMIT = 64 * 1024
FLAG_BIG_ENDIAN = 1
FLAG_INLINE = 2


@dataclass
class BuildInfo:
    version: str
    modinfo: str                 # raw text, sentinels removed ("" when built without modules)
    ptr_size: int
    big_endian: bool
    inline: bool
    path: Optional[str] = None   # main package path
    main: Optional[Dict[str, str]] = None   # {"path", "version", "sum"}
    deps: Dict[str, str] = field(default_factory=dict)       # module path -> version
    replaced: Dict[str, str] = field(default_factory=dict)   # module path -> replacement
    settings: Dict[str, str] = field(default_factory=dict)   # "build" lines

    def modules_json(self) -> dict:
        return {"path": self.path, "main": self.main, "deps": dict(self.deps),
                "replaced": dict(self.replaced), "build": dict(self.settings)}


def _find_blob(img: ElfFile) -> Optional[memoryview]:
    """The build info header and what follows it, or None."""
    sec = img.section(".go.buildinfo")
    if sec is not None:
        region = img.section_bytes(sec)
        regions = [region]
    else:
        # Section headers gone or the section removed: the first writable, non-executable
        # PT_LOAD starts with it.
        regions = []
        for p in img.loads:
            if p.flags & PF_W and not p.flags & PF_X and p.filesz:
                regions.append(img.segment_bytes(p))
                break
    for region in regions:
        limit = min(len(region), SEARCH_LIMIT)
        pos = 0
        while pos + 32 <= limit:
            if bytes(region[pos:pos + 14]) == MAGIC:
                return region[pos:]
            pos += 16
    return None


def _read_go_string(img: ElfFile, addr: int, ptr_size: int, endian: str) -> Optional[str]:
    hdr = img.read(addr, 2 * ptr_size)
    if hdr is None:
        return None
    fmt = endian + ("QQ" if ptr_size == 8 else "II")
    data, length = struct.unpack(fmt, hdr)
    if length == 0:
        return ""
    if length > 1 << 20:
        return None
    raw = img.read(data, length)
    return None if raw is None else raw.decode("utf-8", "replace")


def read_buildinfo(img: ElfFile) -> Optional[BuildInfo]:
    """Parse the build info, or None when the binary carries none."""
    blob = _find_blob(img)
    if blob is None:
        return None
    ptr_size, flags = blob[14], blob[15]
    if ptr_size not in (4, 8):
        return None
    big = bool(flags & FLAG_BIG_ENDIAN)
    endian = ">" if big else "<"
    if flags & FLAG_INLINE:
        try:
            n, pos = uleb128(blob, 32)      # Go's uvarint
            version = bytes(blob[pos:pos + n]).decode("utf-8", "replace")
            n, pos = uleb128(blob, pos + n)
            modinfo = bytes(blob[pos:pos + n]).decode("utf-8", "replace")
        except IndexError:              # cut short
            return None
        inline = True
    else:
        fmt = endian + ("QQ" if ptr_size == 8 else "II")
        vptr, mptr = struct.unpack_from(fmt, blob, 16)
        version = _read_go_string(img, vptr, ptr_size, endian)
        modinfo = _read_go_string(img, mptr, ptr_size, endian) or ""
        if version is None:
            return None
        inline = False
    if len(modinfo) >= 33 and modinfo[-17] == "\n":
        modinfo = modinfo[16:-16]
    else:
        modinfo = ""
    info = BuildInfo(version=version, modinfo=modinfo, ptr_size=ptr_size, big_endian=big,
                     inline=inline)
    parse_modinfo(info)
    return info


def parse_modinfo(info: BuildInfo) -> None:
    """Fill path/main/deps/settings from the modinfo text (`go version -m` lines)."""
    last_dep: Optional[str] = None
    for line in info.modinfo.splitlines():
        parts = line.split("\t")
        kind = parts[0]
        if kind == "path" and len(parts) >= 2:
            info.path = parts[1]
        elif kind == "mod" and len(parts) >= 3:
            info.main = {"path": parts[1], "version": parts[2],
                         "sum": parts[3] if len(parts) > 3 else ""}
        elif kind == "dep" and len(parts) >= 3:
            info.deps[parts[1]] = parts[2]
            last_dep = parts[1]
        elif kind == "=>" and last_dep and len(parts) >= 2:
            target = parts[1] + (" " + parts[2] if len(parts) > 2 and parts[2] else "")
            info.replaced[last_dep] = target
        elif kind == "build" and len(parts) >= 2:
            key, _, value = parts[1].partition("=")
            info.settings[key] = value


def parse_version(text: str) -> Optional[Tuple[int, int, int]]:
    """'go1.21.13' -> (1, 21, 13); 'go1.22' -> (1, 22, 0); prereleases 'go1.23rc1' -> (1, 23, 0).

    None when the text is not a Go release version.
    """
    import re
    m = re.match(r"^go(\d+)\.(\d+)(?:\.(\d+))?(?:(?:rc|beta)\d+)?(?:[ -+].*)?$", text)
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
