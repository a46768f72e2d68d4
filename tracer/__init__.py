"""tracer: a bcc tracer for kernels without BTF.

Fills the `members_offset` (kernel member offsets) and `proc_info_map` (Go processes) eBPF
maps from the resolver's public API, follows Go processes, and proves the offsets on the live
kernel (`tracer verify`).  See tracer/fields.py for what the maps carry.
"""
