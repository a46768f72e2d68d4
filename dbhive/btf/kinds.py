"""BTF's on-disk vocabulary (include/uapi/linux/btf.h): header, kinds, the bits of a type
record's `info` word, integer encodings.  Shared by the reader and the writer."""
from __future__ import annotations

MAGIC = 0xEB9F
VERSION = 1
HEADER_SIZE = 24                 # magic, version, flags, hdr_len, type/str off+len

# kinds
INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO, VAR, DATASEC = 9, 10, 11, 12, 13, 14, 15
FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = 16, 17, 18, 19
MAX_KIND = ENUM64

# the `info` word of a type record: vlen (bits 0-15), kind (24-28), kind_flag (31)
VLEN_MASK = 0xFFFF
KIND_SHIFT, KIND_MASK = 24, 0x1F
KFLAG_SHIFT = 31

# record sizes after the 12-byte common header
COMMON_SIZE = 12
MEMBER_SIZE = 12                 # struct/union member: name_off, type, offset
ENUM_SIZE = 8                    # name_off, val
ENUM64_SIZE = 12                 # name_off, val_lo32, val_hi32
PARAM_SIZE = 8                   # name_off, type
ARRAY_SIZE = 12                  # type, index_type, nelems
VARSECINFO_SIZE = 12             # type, offset, size

# a kind_flag struct member's offset word: bitfield size in bits 24-31, bit offset below
MEMBER_BITFIELD_SHIFT = 24
MEMBER_OFFSET_MASK = 0xFFFFFF

# INT encoding word: encoding bits 24-27, bit offset 16-23, bits 0-7
INT_ENCODING_SHIFT, INT_OFFSET_SHIFT = 24, 16
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4

# FUNC linkage (in vlen)
FUNC_STATIC, FUNC_GLOBAL, FUNC_EXTERN = 0, 1, 2


def info(kind: int, vlen: int = 0, kflag: bool = False) -> int:
    return (int(kflag) << KFLAG_SHIFT) | (kind << KIND_SHIFT) | (vlen & VLEN_MASK)
