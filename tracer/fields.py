"""The one table of what the tracer's BPF maps carry, and where each value comes from.

`MEMBERS` lists every field of the `members_offset` map: the kernel member path(s) that give
it, in order of preference (alternatives across kernel versions), and how the BPF side reads
it.  `go_offset_keys()` / `go_itab_keys()` list the slots of `proc_info_map`'s arrays.  The C structs of
both maps (tracer/bpf/) and the Python packing below are generated from these tables, so the
two sides cannot disagree on a layout.

Kinds of `members_offset` fields:
  offset  the byte offset of a member (the BPF side reads `read` bytes there)
  bits    a member that may be a bitfield: three words, the byte holding its lowest bit, the
          bit position in that byte and the width (a whole field: position 0, width = size*8).
          The BPF side reads 4 bytes at the byte and shifts/masks.
  container  the offset of a member embedded in its container, used backwards (container_of)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

ABSENT = 0xFFFFFFFF          # a members_offset word with no answer for this kernel
GO_UNKNOWN = -1              # a proc_info_map offset slot with no answer for this binary


@dataclass(frozen=True)
class Alt:
    """One way of obtaining a field: a member path, optionally with the bit layout a kernel
    macro gives it inside that member (for the pre-5.6 `sock` flags word)."""
    path: str
    shift: Optional[int] = None     # bits: fixed position of the value inside the member
    width: Optional[int] = None
    note: str = ""


@dataclass(frozen=True)
class Member:
    name: str                       # C field name in struct members_offset
    alts: Tuple[Alt, ...]
    kind: str = "offset"            # offset | bits | container
    read: int = 8                   # bytes the BPF side reads (offset kind)
    sizes: Tuple[int, ...] = ()     # member sizes accepted (default: (read,))
    arch: Tuple[str, ...] = ()      # only on these machines (uname -m); () = all
    why: str = ""

    @property
    def paths(self) -> List[str]:
        return [a.path for a in self.alts]

    def accepts(self, size: int) -> bool:
        return size in (self.sizes or (self.read,))


def _m(name, *paths, **kw) -> Member:
    alts = tuple(p if isinstance(p, Alt) else Alt(p) for p in paths)
    return Member(name, alts, **kw)


_SK = "sock.__sk_common."
# Kernels 4.14-5.5 pack sk_protocol and sk_type as bitfields of the word at __sk_flags_offset
# (include/net/sock.h: SK_FL_PROTO_SHIFT 8 / SK_FL_TYPE_SHIFT 16 on little-endian); the
# bitfields themselves are named in BTF and DWARF, so the named paths come first.
MEMBERS: Tuple[Member, ...] = (
    _m("task_files", "task_struct.files", why="current task -> its fd table"),
    _m("files_fdt", "files_struct.fdt"),
    _m("fdtable_max_fds", "fdtable.max_fds", read=4, why="bounds the fd index"),
    _m("fdtable_fd", "fdtable.fd"),
    _m("file_private_data", "file.private_data", why="a socket file's struct socket"),
    _m("file_f_pos", "file.f_pos"),
    _m("file_f_op", "file.f_op"),
    _m("file_f_inode", "file.f_inode"),
    _m("fop_read_iter", "file_operations.read_iter"),
    _m("inode_i_mode", "inode.i_mode", read=2),
    _m("inode_i_sb", "inode.i_sb"),
    _m("sb_s_dev", "super_block.s_dev", read=4),
    _m("file_dentry", "file.f_path.dentry"),
    _m("dentry_name", "dentry.d_name.name"),
    _m("dentry_parent", "dentry.d_parent"),
    _m("socket_sk", "socket.sk"),
    _m("socket_file", "socket.file"),
    _m("skc_family", _SK + "skc_family", read=2),
    _m("skc_rcv_saddr", _SK + "skc_rcv_saddr", read=4),
    _m("skc_daddr", _SK + "skc_daddr", read=4),
    _m("skc_v6_rcv_saddr", _SK + "skc_v6_rcv_saddr", read=16),
    _m("skc_v6_daddr", _SK + "skc_v6_daddr", read=16),
    _m("skc_dport", _SK + "skc_dport", read=2),
    _m("skc_num", _SK + "skc_num", read=2),
    _m("skc_state", _SK + "skc_state", read=1),
    _m("skc_ipv6only", _SK + "skc_ipv6only", kind="bits"),
    _m("sk_type", "sock.sk_type",
       Alt("sock.__sk_flags_offset", 16, 16, "SK_FL_TYPE_SHIFT/MASK, kernels < 5.6"),
       kind="bits"),
    _m("sk_protocol", "sock.sk_protocol",
       Alt("sock.__sk_flags_offset", 8, 8, "SK_FL_PROTO_SHIFT/MASK, kernels < 5.6"),
       kind="bits"),
    _m("tcp_copied_seq", "tcp_sock.copied_seq", read=4),
    _m("tcp_write_seq", "tcp_sock.write_seq", read=4),
    _m("file_mnt", "file.f_path.mnt", why="struct vfsmount * (embedded in struct mount)"),
    _m("mount_mnt", "mount.mnt", kind="container", why="container_of(vfsmount, mount, mnt)"),
    _m("mount_mnt_ns", "mount.mnt_ns"),
    _m("mnt_ns_inum", "mnt_namespace.ns.inum", read=4),
    _m("mount_mnt_id", "mount.mnt_id", read=4),
    # 5.14 renamed `long state` to `unsigned int __state`; the low 32 bits are the state.
    _m("task_state", "task_struct.__state", "task_struct.state", read=4, sizes=(4, 8)),
    # Go < 1.17 on amd64 keeps g in thread-local storage: the task's FS base finds it.
    _m("task_fsbase", "task_struct.thread.fsbase", "task_struct.thread.fs", arch=("x86_64",),
       why="Go < 1.17 amd64: g at fsbase-8"),
)

MEMBERS_BY_NAME: Dict[str, Member] = {m.name: m for m in MEMBERS}


def c_words(m: Member) -> List[str]:
    """The u32 words a member occupies in struct members_offset."""
    if m.kind == "bits":
        return [m.name, m.name + "_shift", m.name + "_width"]
    return [m.name]


WORDS: List[str] = ["ready"] + [w for m in MEMBERS for w in c_words(m)]


# ---- proc_info_map (Go) -------------------------------------------------------------------

# Go lays out struct fields in declaration order, the first at offset 0: these three are the
# first field of their struct in every Go release the resolver knows (net/tcpsock.go,
# net/net.go, net/fd_posix.go), the answer used when the binary has no DWARF for them.
GO_FIRST_FIELDS = ("net.TCPConn.conn", "net.conn.fd", "net.netFD.pfd")


@lru_cache(maxsize=1)
def go_offset_keys() -> Tuple[str, ...]:
    """Slots of proc_info_map's offsets array: the resolver's standard Go offsets, then the
    first fields above.  (resolver.golang is imported here, on first use: it pulls in a
    disassembler that `tracer offsets` does not need.)"""
    from resolver.golang import STANDARD_OFFSETS
    return tuple(STANDARD_OFFSETS) + tuple(k for k in GO_FIRST_FIELDS if k not in STANDARD_OFFSETS)


@lru_cache(maxsize=1)
def go_itab_keys() -> Tuple[str, ...]:
    """Slots of proc_info_map's itab array."""
    from resolver.golang import STANDARD_ITABS
    return tuple(STANDARD_ITABS)


# the Go slots the BPF side reads (C names -> table keys)
GO_USED = {
    "GOOFF_GOID": "runtime.g.goid",
    "GOOFF_TLS_CONN": "crypto/tls.Conn.conn",
    "GOOFF_TCPCONN_CONN": "net.TCPConn.conn",
    "GOOFF_CONN_FD": "net.conn.fd",
    "GOOFF_NETFD_PFD": "net.netFD.pfd",
    "GOOFF_FD_SYSFD": "internal/poll.FD.Sysfd",
}
ITAB_USED = {"ITAB_TCPCONN": "*net.TCPConn,net.Conn"}

# proc_info_map flags
GO_G_TLS = 1          # g is read from TLS (fsbase + g_tls), not from the g register
GO_STACK_ABI = 2      # arguments and results on the stack (Go < 1.17 amd64, < 1.18 arm64)


# ---- C declarations ------------------------------------------------------------------------

def c_header() -> str:
    """The generated C declarations both maps' users compile against."""
    lines = ["/* generated by tracer/fields.py: do not edit */",
             f"#define ABSENT 0x{ABSENT:x}U", "struct members_offset {"]
    lines += [f"    u32 {w};" for w in WORDS]
    lines.append("};")
    offs, itabs = go_offset_keys(), go_itab_keys()
    lines.append(f"#define N_GO_OFFSETS {len(offs)}")
    lines.append(f"#define N_GO_ITABS {len(itabs)}")
    for cname, key in GO_USED.items():
        lines.append(f"#define {cname} {offs.index(key)}   /* {key} */")
    for cname, key in ITAB_USED.items():
        lines.append(f"#define {cname} {itabs.index(key)}   /* {key} */")
    lines.append(f"#define GO_G_TLS {GO_G_TLS}")
    lines.append(f"#define GO_STACK_ABI {GO_STACK_ABI}")
    lines += ["struct go_proc_info {",
              "    u32 version;                    /* (major<<16)|(minor<<8)|patch */",
              "    u32 flags;                      /* GO_G_TLS, GO_STACK_ABI */",
              "    s32 g_tls;                      /* g's offset from the TLS base */",
              "    u32 pad;",
              "    s32 offsets[N_GO_OFFSETS];      /* -1: unknown */",
              *(["    s32 pad_offsets;                /* keeps itabs 8-aligned */"]
                if len(offs) % 2 else []),
              "    u64 itabs[N_GO_ITABS];          /* runtime addresses, 0: unknown */",
              "};"]
    return "\n".join(lines) + "\n"


# ---- packing -----------------------------------------------------------------------------

MEMBERS_FMT = "<" + "I" * len(WORDS)


def pack_members(words: Dict[str, int], ready: bool = True) -> bytes:
    """struct members_offset as bytes; words missing from `words` are ABSENT."""
    vals = [1 if ready else 0] + [words.get(w, ABSENT) for w in WORDS[1:]]
    return struct.pack(MEMBERS_FMT, *vals)


def unpack_members(raw: bytes) -> Dict[str, int]:
    return dict(zip(WORDS, struct.unpack(MEMBERS_FMT, raw[:struct.calcsize(MEMBERS_FMT)])))


def go_version_code(v: Optional[tuple]) -> int:
    if not v:
        return 0
    major, minor, patch = (tuple(v) + (0, 0, 0))[:3]
    return (major << 16) | (minor << 8) | patch


@dataclass
class GoProcInfo:
    version: int
    flags: int
    g_tls: int
    offsets: List[int] = field(default_factory=list)
    itabs: List[int] = field(default_factory=list)

    def pack(self) -> bytes:
        n_off, n_itab = len(go_offset_keys()), len(go_itab_keys())
        offs = (list(self.offsets) + [GO_UNKNOWN] * n_off)[:n_off]
        itabs = (list(self.itabs) + [0] * n_itab)[:n_itab]
        pad = [0] * (n_off % 2)            # C pads the offsets to keep itabs 8-aligned
        return struct.pack(f"<IIiI{n_off + len(pad)}i{n_itab}Q", self.version, self.flags,
                           self.g_tls, 0, *offs, *pad, *itabs)
