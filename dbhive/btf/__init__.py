"""BTF: raw BTF (/sys/kernel/btf/vmlinux, *.btf, an ELF's .BTF section) <-> the shared type
model.  `reader.py` turns bytes into a TypeGraph; `kinds.py` holds the on-disk vocabulary."""
from ..errors import BtfError
from .reader import MAX_BTF_BYTES, read_btf, read_btf_file

__all__ = ["BtfError", "MAX_BTF_BYTES", "read_btf", "read_btf_file"]
