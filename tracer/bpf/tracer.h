/* The tracer's BPF side, part 1: maps and readers.
 *
 * Kernel memory is read only through the offsets in members_offset, Go memory only through
 * proc_info_map: no kernel struct headers, no offsets written here.  Kept to what Linux 4.14
 * runs: helpers bpf_probe_read(_str), bpf_get_current_task, bpf_get_current_pid_tgid,
 * bpf_map_*, bpf_perf_event_output, bpf_ktime_get_ns; no loops; everything inlined.
 * Preceded by tracer/fields.py's generated declarations and the arch macros (GO_*). */

/* user-space ABI constants (uapi), not kernel layouts */
#define TR_S_IFMT   0170000
#define TR_S_IFSOCK 0140000
#define TR_AF_INET  2
#define TR_AF_INET6 10
#define TR_SOCK_STREAM 1
#define TR_IPPROTO_TCP 6

enum tracer_event_kind {
    EV_EXEC = 1, EV_FORK = 2, EV_EXIT = 3,
    EV_TCP_WRITE = 4, EV_TCP_READ = 5,
    EV_GO_TLS_WRITE = 6, EV_GO_TLS_READ = 7,
};

struct tracer_config {
    u32 events;          /* emit TCP and Go TLS events */
    u32 follow;          /* emit exec/fork/exit events */
    u32 self_tgid;       /* the tracer itself: never traced */
    u32 verify_tgid;     /* verify: the process whose probe writes are walked */
    u32 verify_fd;
    u32 pad;
};

struct tracer_event {
    u32 kind;
    u32 pid;             /* tgid, as the host sees it */
    u32 tid;
    s32 fd;
    s64 ret;             /* bytes: the syscall's result, or n returned by Go */
    u64 goid;
    u64 conn;            /* the *tls.Conn */
    u32 child;
    u16 family;
    u8 state;
    u8 pad;
    u16 sport;           /* host order */
    u16 dport;           /* host order */
    u32 pad2;
    u8 saddr[16];
    u8 daddr[16];
};

struct verify_rec {
    u32 seq;             /* bumped after every probe, so user space sees a fresh record */
    u32 steps;           /* bit i: walk step i gave a non-NULL pointer */
    u64 file, sock_file, read_iter, fsbase;
    s64 f_pos;
    u32 i_mode, s_dev, mnt_id, mnt_ns_inum, task_state;
    u32 family, state, sk_type, sk_protocol, ipv6only;
    u32 num, dport, saddr, daddr, copied_seq, write_seq;
    u8 saddr6[16];
    u8 daddr6[16];
    char name[64];
    char parent[64];
};

struct go_key {
    u32 pid;
    u32 kind;
    u64 goid;
};

struct go_call {
    u64 conn;
    s64 fd;
};

BPF_PERCPU_ARRAY(members_offset, struct members_offset, 1);
BPF_HASH(proc_info_map, u32, struct go_proc_info, PROC_INFO_MAX);
BPF_ARRAY(tracer_config, struct tracer_config, 1);
BPF_ARRAY(verify_out, struct verify_rec, 1);
BPF_TABLE("lru_hash", struct go_key, struct go_call, go_calls, 16384);
BPF_TABLE("lru_hash", u64, struct tracer_event, sys_calls, 16384);
BPF_PERF_OUTPUT(events);

static __always_inline struct members_offset *mo_get(void)
{
    u32 k = 0;
    struct members_offset *mo = members_offset.lookup(&k);
    if (!mo || !mo->ready)
        return 0;
    return mo;
}

static __always_inline struct tracer_config *cfg_get(void)
{
    u32 k = 0;
    return tracer_config.lookup(&k);
}

/* Readers: 0 when the base is NULL or the offset is ABSENT (bpf_probe_read never faults). */
static __always_inline u64 rd_u64(const void *base, u32 off)
{
    u64 v = 0;
    if (base && off != ABSENT)
        bpf_probe_read(&v, sizeof(v), (const char *)base + off);
    return v;
}
#define rd_ptr(b, o) ((void *)rd_u64((b), (o)))

static __always_inline u32 rd_u32(const void *base, u32 off)
{
    u32 v = 0;
    if (base && off != ABSENT)
        bpf_probe_read(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u32 rd_u16(const void *base, u32 off)
{
    u16 v = 0;
    if (base && off != ABSENT)
        bpf_probe_read(&v, sizeof(v), (const char *)base + off);
    return v;
}

static __always_inline u32 rd_u8(const void *base, u32 off)
{
    u8 v = 0;
    if (base && off != ABSENT)
        bpf_probe_read(&v, sizeof(v), (const char *)base + off);
    return v;
}

/* A field that may be a bitfield: the byte holding its lowest bit, the bit in that byte,
 * the width (a whole u8/u16/u32 field: bit 0, width 8/16/32). */
static __always_inline u32 rd_bits(const void *base, u32 off, u32 shift, u32 width)
{
    u32 w = 0;
    if (!base || off == ABSENT)
        return 0;
    bpf_probe_read(&w, sizeof(w), (const char *)base + off);
    w >>= (shift & 7);
    if (width < 32)
        w &= (1U << (width & 31)) - 1;
    return w;
}

/* current->files->fdt->fd[fd] */
static __always_inline void *fd_file(struct members_offset *mo, void *task, u32 fd, u32 *steps)
{
    void *files = rd_ptr(task, mo->task_files);
    void *fdt = rd_ptr(files, mo->files_fdt);
    void *fds;
    void *file = 0;
    if (!fdt)
        return 0;
    *steps |= 1;
    if (mo->fdtable_max_fds != ABSENT && fd >= rd_u32(fdt, mo->fdtable_max_fds))
        return 0;
    fds = rd_ptr(fdt, mo->fdtable_fd);
    if (!fds)
        return 0;
    *steps |= 2;
    bpf_probe_read(&file, sizeof(file), (const char *)fds + (u64)fd * sizeof(void *));
    if (file)
        *steps |= 4;
    return file;
}

static __always_inline void *file_sock(struct members_offset *mo, void *file)
{
    void *socket = rd_ptr(file, mo->file_private_data);
    return rd_ptr(socket, mo->socket_sk);
}

/* The TCP socket behind fd, or NULL: an S_IFSOCK inode whose sock is INET/INET6 stream TCP. */
static __always_inline void *tcp_sock_of(struct members_offset *mo, u32 fd)
{
    u32 steps = 0;
    void *file = fd_file(mo, (void *)bpf_get_current_task(), fd, &steps);
    void *inode = rd_ptr(file, mo->file_f_inode);
    void *sk;
    u32 family;
    if (!inode || (rd_u16(inode, mo->inode_i_mode) & TR_S_IFMT) != TR_S_IFSOCK)
        return 0;
    sk = file_sock(mo, file);
    if (!sk)
        return 0;
    family = rd_u16(sk, mo->skc_family);
    if (family != TR_AF_INET && family != TR_AF_INET6)
        return 0;
    if (rd_bits(sk, mo->sk_type, mo->sk_type_shift, mo->sk_type_width) != TR_SOCK_STREAM ||
        rd_bits(sk, mo->sk_protocol, mo->sk_protocol_shift, mo->sk_protocol_width) !=
            TR_IPPROTO_TCP)
        return 0;
    return sk;
}

static __always_inline u16 be16(u32 v)
{
    return ((v & 0xff) << 8) | ((v >> 8) & 0xff);
}

static __always_inline void sock_tuple(struct members_offset *mo, void *sk,
                                       struct tracer_event *ev)
{
    ev->family = rd_u16(sk, mo->skc_family);
    ev->state = rd_u8(sk, mo->skc_state);
    ev->sport = rd_u16(sk, mo->skc_num);
    ev->dport = be16(rd_u16(sk, mo->skc_dport));
    if (ev->family == TR_AF_INET6) {
        if (mo->skc_v6_rcv_saddr != ABSENT && mo->skc_v6_daddr != ABSENT) {
            bpf_probe_read(ev->saddr, 16, (const char *)sk + mo->skc_v6_rcv_saddr);
            bpf_probe_read(ev->daddr, 16, (const char *)sk + mo->skc_v6_daddr);
        }
    } else {
        u32 s = rd_u32(sk, mo->skc_rcv_saddr), d = rd_u32(sk, mo->skc_daddr);
        __builtin_memcpy(ev->saddr, &s, 4);
        __builtin_memcpy(ev->daddr, &d, 4);
    }
}

/* ---- Go ---------------------------------------------------------------------------------- */

static __always_inline void *go_g(struct pt_regs *ctx, struct go_proc_info *gi,
                                  struct members_offset *mo)
{
    void *g = 0;
    if (gi->flags & GO_G_TLS) {
        u64 base = rd_u64((void *)bpf_get_current_task(), mo->task_fsbase);
        if (!base)
            return 0;
        bpf_probe_read(&g, sizeof(g), (void *)(base + (s64)gi->g_tls));
        return g;
    }
    return (void *)GO_G_REG(ctx);
}

static __always_inline u64 go_goid(struct pt_regs *ctx, struct go_proc_info *gi,
                                   struct members_offset *mo)
{
    u64 id = 0;
    void *g = go_g(ctx, gi, mo);
    s32 off = gi->offsets[GOOFF_GOID];
    if (g && off >= 0)
        bpf_probe_read(&id, sizeof(id), (const char *)g + off);
    return id;
}

/* c.conn (a net.Conn) -> *net.TCPConn -> conn.fd (*netFD) -> pfd.Sysfd */
static __always_inline s64 go_conn_fd(struct go_proc_info *gi, u64 tlsconn)
{
    struct { u64 tab; u64 data; } iface = {};
    s32 o_conn = gi->offsets[GOOFF_TLS_CONN], o_tcp = gi->offsets[GOOFF_TCPCONN_CONN];
    s32 o_fd = gi->offsets[GOOFF_CONN_FD], o_pfd = gi->offsets[GOOFF_NETFD_PFD];
    s32 o_sys = gi->offsets[GOOFF_FD_SYSFD];
    u64 want = gi->itabs[ITAB_TCPCONN];
    u64 netfd = 0;
    s64 fd = -1;
    if (!tlsconn || o_conn < 0 || o_tcp < 0 || o_fd < 0 || o_pfd < 0 || o_sys < 0)
        return -1;
    bpf_probe_read(&iface, sizeof(iface), (void *)(tlsconn + o_conn));
    if (!iface.data || (want && iface.tab != want))
        return -1;
    bpf_probe_read(&netfd, sizeof(netfd), (void *)(iface.data + o_tcp + o_fd));
    if (!netfd)
        return -1;
    bpf_probe_read(&fd, sizeof(fd), (void *)(netfd + o_pfd + o_sys));
    return fd;
}

static __always_inline u64 go_stack_word(struct pt_regs *ctx, u32 off)
{
    u64 v = 0;
    bpf_probe_read(&v, sizeof(v), (void *)(GO_SP(ctx) + off));
    return v;
}
