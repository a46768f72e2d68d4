"""Debian packages (.deb, Ubuntu .ddeb): an `ar` archive of `debian-binary`,
`control.tar[.*]` and `data.tar[.*]`.  The ar headers are read here; the lead streams only
the byte range of the member it needs through libarchive (data.tar is never written out).
Also the two control files used: `control` (Package, Version) and `md5sums`."""
from __future__ import annotations

from ..errors import ArchiveError
from .detect import AR_MAGIC

AR_HEADER_SIZE = 60
AR_HEADER_END = b"`\n"
MD5SUMS_PATH_AT = 34            # "<32 hex digits>  <path>"


def ar_members(path: str, file_size: int) -> list[tuple[str, int, int]]:
    """(name, offset, size) of each member of the ar archive at `path`."""
    members = []
    with open(path, "rb") as fh:
        if fh.read(len(AR_MAGIC)) != AR_MAGIC:
            raise ArchiveError(f"{path}: not an ar archive")
        pos = len(AR_MAGIC)
        while True:
            hdr = fh.read(AR_HEADER_SIZE)
            if not hdr:
                break
            if len(hdr) < AR_HEADER_SIZE or hdr[58:60] != AR_HEADER_END:
                raise ArchiveError(f"{path}: truncated or damaged .deb (bad ar member header "
                                   f"at byte {pos})")
            name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
            try:
                size = int(hdr[48:58].decode("ascii").strip())
            except ValueError:
                raise ArchiveError(f"{path}: damaged .deb (bad size in ar member "
                                   f"{name!r})") from None
            start = pos + AR_HEADER_SIZE
            if size < 0 or start + size > file_size:
                raise ArchiveError(f"{path}: truncated .deb (member {name} needs {size} "
                                   f"bytes, {file_size - start} left)")
            members.append((name, start, size))
            pos = start + size + (size & 1)
            fh.seek(pos)
    return members


def ar_member(path: str, members: list, prefix: str) -> tuple[str, int, int]:
    """The member named `prefix` or `prefix.<compression>` (control.tar.xz, data.tar.zst)."""
    for m in members:
        if m[0] == prefix or m[0].startswith(prefix + "."):
            return m
    raise ArchiveError(f"{path}: not a Debian package (no {prefix}.* member)")


def control_fields(text: str) -> dict:
    """The fields of a `control` file (continuation lines ignored)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith((" ", "\t")):
            fields[key.strip()] = value.strip()
    return fields


def md5sums(text: str) -> list[tuple[str, str]]:
    """(path, md5 hex) of each line of an `md5sums` file."""
    return [(line[MD5SUMS_PATH_AT:], line[:32]) for line in text.splitlines()
            if len(line) > MD5SUMS_PATH_AT]
