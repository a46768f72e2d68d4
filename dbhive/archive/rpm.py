"""RPM packages: the lead and the two header structures (signature, main) in front of the
cpio payload.  What is read here: the package's NAME and VERSION-RELEASE, the digest of
every file it holds (to verify the member we extract), and the signature's size tag (so a
truncated RPM is reported before anything is decompressed).  libarchive reads the payload."""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from ..errors import ArchiveError

HEADER_MAGIC = b"\x8e\xad\xe8\x01"
LEAD_SIZE = 96
MAX_HEADER_BYTES = 256 << 20    # a kernel-debuginfo RPM's main header is a few MB

# signature tags
SIGTAG_LONGSIZE = 270           # header + payload bytes (64-bit)
SIGTAG_SIZE = 1000              # header + payload bytes
# main header tags
TAG_NAME, TAG_VERSION, TAG_RELEASE = 1000, 1001, 1002
TAG_FILEDIGESTS = 1035
TAG_DIRINDEXES, TAG_BASENAMES, TAG_DIRNAMES = 1116, 1117, 1118
TAG_FILEDIGESTALGO = 5011
# tag value types
TYPE_INT8, TYPE_INT16, TYPE_INT32, TYPE_INT64 = 2, 3, 4, 5
TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING = 6, 8, 9
_INT_FORMATS = {TYPE_INT8: "B", TYPE_INT16: "H", TYPE_INT32: "I", TYPE_INT64: "Q"}
_STRING_TYPES = (TYPE_STRING, TYPE_STRING_ARRAY, TYPE_I18NSTRING)
# the tags read, and whether each holds numbers or strings (tag numbers of the two headers
# overlap: 1000 is the signature's SIZE and the main header's NAME)
_NUMBER, _TEXT = "number", "string"
_SIG_TAGS = {SIGTAG_LONGSIZE: _NUMBER, SIGTAG_SIZE: _NUMBER}
_MAIN_TAGS = {TAG_NAME: _TEXT, TAG_VERSION: _TEXT, TAG_RELEASE: _TEXT,
              TAG_FILEDIGESTS: _TEXT, TAG_DIRINDEXES: _NUMBER, TAG_BASENAMES: _TEXT,
              TAG_DIRNAMES: _TEXT, TAG_FILEDIGESTALGO: _NUMBER}

# PGP hash algorithm numbers (FILEDIGESTALGO); md5 when the tag is absent
DIGEST_ALGOS = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
DEFAULT_DIGEST_ALGO = 1


@dataclass
class RpmInfo:
    name: str = ""
    version: str = ""                               # VERSION-RELEASE
    digests: dict = field(default_factory=dict)     # member path -> (hash name, hex digest)


def read_rpm_headers(path: str, file_size: int, normalise) -> RpmInfo:
    """Read the RPM's headers.  `normalise(raw_path)` turns a file path of the header into
    the member spelling libarchive gives (and refuses unsafe ones)."""
    with open(path, "rb") as fh:
        lead = fh.read(LEAD_SIZE)
        if len(lead) < LEAD_SIZE:
            raise ArchiveError(f"{path}: truncated RPM (lead cut short)")
        sig = _header(fh, path, "signature", file_size, _SIG_TAGS)
        fh.seek(-fh.tell() % 8, os.SEEK_CUR)        # the main header is 8-aligned
        main_start = fh.tell()
        main = _header(fh, path, "main", file_size, _MAIN_TAGS)
    total = (sig.get(SIGTAG_LONGSIZE) or sig.get(SIGTAG_SIZE) or [None])[0]
    if total is not None and main_start + total > file_size:
        raise ArchiveError(f"{path}: truncated RPM ({file_size} bytes, its header says "
                           f"{main_start + total})")

    def first(tag):
        return (main.get(tag) or [""])[0]
    info = RpmInfo(first(TAG_NAME),
                   f"{first(TAG_VERSION)}-{first(TAG_RELEASE)}" if first(TAG_VERSION) else "")
    # file digests: FILEDIGESTS parallel to DIRINDEXES / BASENAMES into DIRNAMES
    algo = DIGEST_ALGOS.get(first(TAG_FILEDIGESTALGO) or DEFAULT_DIGEST_ALGO)
    names = []
    if TAG_DIRNAMES in main:
        dirs = main[TAG_DIRNAMES]
        names = [dirs[i] + b for i, b in zip(main.get(TAG_DIRINDEXES, []),
                                             main.get(TAG_BASENAMES, [])) if i < len(dirs)]
    if algo:
        info.digests = {normalise(n): (algo, d)
                        for n, d in zip(names, main.get(TAG_FILEDIGESTS, [])) if d}
    return info


def _header(fh, path: str, which: str, file_size: int, wanted: dict) -> dict:
    """One RPM header structure at the file position: {tag: [values]} for the tags of
    `wanted` ({tag: _NUMBER or _TEXT}); a wanted tag of the other kind is a damaged RPM."""
    head = fh.read(16)
    if len(head) < 16 or head[:4] != HEADER_MAGIC:
        raise ArchiveError(f"{path}: truncated or damaged RPM ({which} header missing)")
    nindex, hsize = struct.unpack(">II", head[8:16])
    need = 16 * nindex + hsize
    if need > min(MAX_HEADER_BYTES, file_size - fh.tell()):
        raise ArchiveError(f"{path}: truncated or damaged RPM ({which} header claims {need} "
                           f"bytes)")
    index, store = fh.read(16 * nindex), fh.read(hsize)
    if len(index) != 16 * nindex or len(store) != hsize:
        raise ArchiveError(f"{path}: truncated RPM ({which} header cut short)")
    tags = {}
    for i in range(nindex):
        tag, typ, off, count = struct.unpack_from(">IIII", index, 16 * i)
        kind = wanted.get(tag)
        if kind is None:
            continue
        if typ not in (_INT_FORMATS if kind == _NUMBER else _STRING_TYPES):
            raise ArchiveError(f"{path}: damaged RPM ({which} header tag {tag} should hold "
                               f"{kind}s, has type {typ})")
        if typ in _INT_FORMATS:
            fmt = ">%d%s" % (count, _INT_FORMATS[typ])
            if off + struct.calcsize(fmt) <= hsize:
                tags[tag] = list(struct.unpack_from(fmt, store, off))
        elif typ in _STRING_TYPES:
            values = store[off:].split(b"\0", count)[:count]
            tags[tag] = [v.decode("utf-8", "replace") for v in values]
    return tags
