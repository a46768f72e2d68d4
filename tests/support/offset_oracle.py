"""The member paths the resolver is checked on, and the check against pahole's offsets."""
from __future__ import annotations

import pytest

from resolver import AbsentMember, NoSuchType, NotAPointer, Resolver
from tests.support.resolver_dbs import Absent, PaholeOffsets

# Member paths tracers use (shared/docs/formats.md) plus nested / anonymous / bitfield /
# array / typedef cases.  Some are absent in some kernels: then pahole must agree.
PATHS = [
    # formats.md: the members_offset map
    "task_struct.files", "files_struct.fdt", "fdtable.fd", "file.private_data", "file.f_pos",
    "file.f_op", "file.f_inode", "file_operations.read_iter", "inode.i_mode", "inode.i_sb",
    "super_block.s_dev", "file.f_path.dentry", "dentry.d_name.name", "dentry.d_parent",
    "socket.sk", "socket.file",
    "sock.__sk_common.skc_family", "sock.__sk_common.skc_rcv_saddr",
    "sock.__sk_common.skc_daddr", "sock.__sk_common.skc_v6_rcv_saddr",
    "sock.__sk_common.skc_v6_daddr", "sock.__sk_common.skc_dport",
    "sock.__sk_common.skc_num", "sock.__sk_common.skc_state",
    "sock.__sk_common.skc_ipv6only",                       # bitfield
    "sock.sk_type", "sock.sk_protocol",                    # real fields (5.6+) or bitfields
    "tcp_sock.copied_seq", "tcp_sock.write_seq",
    "file.f_path.mnt", "mount.mnt", "mount.mnt_ns", "mnt_namespace.ns.inum", "mount.mnt_id",
    # tasks
    "task_struct.pid", "task_struct.tgid", "task_struct.comm", "task_struct.real_parent",
    "task_struct.mm", "task_struct.nsproxy", "nsproxy.mnt_ns", "task_struct.cred",
    "task_struct.se.vruntime", "task_struct.__state", "task_struct.state",
    "task_struct.signal", "task_struct.flags", "task_struct.thread_info.flags",
    "cred.uid", "cred.uid.val",                            # typedef of an anonymous struct
    "mm_struct.mm_users", "mm_struct.mm_users.counter",    # atomic_t
    "atomic_t.counter",                                    # typedef as the root
    # networking
    "sk_buff.data", "sk_buff.len", "sk_buff.head", "sk_buff.network_header",
    "sk_buff.transport_header", "sk_buff.dev", "net_device.ifindex", "net_device.name",
    "iphdr.protocol", "iphdr.saddr", "iphdr.daddr", "iphdr.ihl", "iphdr.version",
    "tcphdr.source", "tcphdr.dest", "tcphdr.syn", "tcphdr.doff", "udphdr.dest",
    "inet_sock.inet_sport", "inet_sock.sk.__sk_common.skc_daddr",
    "tcp_sock.inet_conn.icsk_inet.sk.__sk_common.skc_family",    # deep embedding
    "sock.sk_rcvbuf", "sock.sk_sndbuf",
    # anonymous structs/unions inside
    "qstr.len", "qstr.hash", "qstr.hash_len", "inode.i_lock.rlock", "dentry.d_inode",
    "inode.i_ino", "file.f_mode", "sk_buff.sk", "sk_buff.tstamp",
    # arrays
    "task_struct.comm[3]", "net_device.name[2]",
    "sock.__sk_common.skc_v6_daddr.in6_u.u6_addr32[2]",
    "in6_addr.in6_u.u6_addr8[15]",
    # misc
    "pid.numbers", "upid.nr", "fdtable.max_fds", "path.dentry",
]


def check_paths(r: Resolver, oracle: PaholeOffsets, paths) -> tuple:
    present = absent = 0
    bitfields = 0
    for p in paths:
        try:
            want = oracle.offset(p)
        except Absent:
            with pytest.raises((AbsentMember, NoSuchType, NotAPointer)):
                r.offset(p)
            absent += 1
            continue
        got = r.offset(p)
        assert got.offset == want["offset"], (p, got, want)
        if want["size"] is not None:
            assert got.size == want["size"], (p, got, want)
        assert got.bit_size == want["bit_size"], (p, got, want)
        assert got.bit_offset == want["bit_offset"], (p, got, want)
        bitfields += got.bit_size is not None
        present += 1
    return present, absent, bitfields
