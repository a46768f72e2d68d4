"""LEB128, the variable-length integers of DWARF — and of Go, whose `uvarint` (build info,
pclntab, type names) is the same unsigned encoding.  The one implementation every reader
uses.  A number that runs past the end of the buffer raises IndexError (the buffer bounds
the read); callers turn that into their format's error.

The DWARF scanner's generated decoders call these on the hot path; a few of its innermost
loops decode the common one-byte case inline (dwarf/scan.py, dwarf/forms.py) for speed.
"""
from __future__ import annotations


def uleb128(d, o: int):
    """The unsigned LEB128 number at `d[o]`: (value, offset after it)."""
    b = d[o]
    if b < 0x80:
        return b, o + 1
    v = b & 0x7F
    shift = 7
    while True:
        o += 1
        b = d[o]
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, o + 1
        shift += 7


def sleb128(d, o: int):
    """The signed LEB128 number at `d[o]`: (value, offset after it)."""
    v = 0
    shift = 0
    while True:
        b = d[o]
        o += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                v -= 1 << shift
            return v, o


def skip_leb128(d, o: int) -> int:
    """The offset after the LEB128 number at `d[o]`."""
    while d[o] & 0x80:
        o += 1
    return o + 1
