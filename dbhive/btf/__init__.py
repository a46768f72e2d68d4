"""BTF: raw BTF (/sys/kernel/btf/vmlinux, *.btf, an ELF's .BTF section) <-> the shared type
model.  `reader.py` turns bytes into a TypeGraph; `kinds.py` holds the on-disk vocabulary.
BTF out of the hive: `emit.emit(graph, profile)` (profiles.py, dedup.py, writer.py) for full
BTF, `minimal.minimal_graph(objects, view)` (ext.py, core.py, dbview.py) for what BPF
objects' CO-RE relocations need; `make.py` and `cli.py` are `dbhive btf`."""
from ..errors import BtfError
from .reader import MAX_BTF_BYTES, read_btf, read_btf_file

__all__ = ["BtfError", "MAX_BTF_BYTES", "read_btf", "read_btf_file"]
