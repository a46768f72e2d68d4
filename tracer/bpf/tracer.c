/* The tracer's BPF side, part 2: the programs (classic tracepoints and uprobes only).
 * tracer/bpf.py lists them with their attach points; tests check each against the 4.14
 * rules on bcc's raw bytecode. */

/* ---- following processes ------------------------------------------------------------------ */

int on_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct tracer_config *cfg = cfg_get();
    struct tracer_event ev = {};
    u32 pid = args->pid;
    /* a new image: whatever proc_info_map said about the old one is wrong now */
    proc_info_map.delete(&pid);
    if (!cfg || !cfg->follow)
        return 0;
    ev.kind = EV_EXEC;
    ev.pid = pid;
    ev.tid = args->old_pid;
    events.perf_submit(args, &ev, sizeof(ev));
    return 0;
}

int on_fork(struct tracepoint__sched__sched_process_fork *args)
{
    struct tracer_config *cfg = cfg_get();
    struct tracer_event ev = {};
    u32 parent = bpf_get_current_pid_tgid() >> 32;
    if (!cfg || !cfg->follow || !proc_info_map.lookup(&parent))
        return 0;              /* only children of followed Go processes matter */
    ev.kind = EV_FORK;
    ev.pid = parent;
    ev.child = args->child_pid;
    events.perf_submit(args, &ev, sizeof(ev));
    return 0;
}

int on_exit(struct tracepoint__sched__sched_process_exit *args)
{
    struct tracer_config *cfg = cfg_get();
    struct tracer_event ev = {};
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if ((u32)id != tgid)
        return 0;              /* a thread, not the process */
    proc_info_map.delete(&tgid);
    if (!cfg || !cfg->follow)
        return 0;
    ev.kind = EV_EXIT;
    ev.pid = tgid;
    events.perf_submit(args, &ev, sizeof(ev));
    return 0;
}

/* ---- syscall write/read on TCP sockets ----------------------------------------------------- */

static __always_inline int sys_enter(u32 fd, u32 kind)
{
    struct tracer_config *cfg = cfg_get();
    struct members_offset *mo;
    struct tracer_event ev = {};
    u64 id = bpf_get_current_pid_tgid();
    void *sk;
    if (!cfg || !cfg->events || (id >> 32) == cfg->self_tgid)
        return 0;
    mo = mo_get();
    if (!mo)
        return 0;
    sk = tcp_sock_of(mo, fd);
    if (!sk)
        return 0;
    ev.kind = kind;
    ev.pid = id >> 32;
    ev.tid = (u32)id;
    ev.fd = fd;
    sock_tuple(mo, sk, &ev);
    sys_calls.update(&id, &ev);
    return 0;
}

static __always_inline int sys_exit(void *args, s64 ret)
{
    u64 id = bpf_get_current_pid_tgid();
    struct tracer_event *ev = sys_calls.lookup(&id);
    if (!ev)
        return 0;
    ev->ret = ret;
    events.perf_submit(args, ev, sizeof(*ev));
    sys_calls.delete(&id);
    return 0;
}

int on_write_enter(struct tracepoint__syscalls__sys_enter_write *args)
{
    return sys_enter(args->fd, EV_TCP_WRITE);
}

int on_read_enter(struct tracepoint__syscalls__sys_enter_read *args)
{
    return sys_enter(args->fd, EV_TCP_READ);
}

int on_write_exit(struct tracepoint__syscalls__sys_exit_write *args)
{
    return sys_exit(args, args->ret);
}

int on_read_exit(struct tracepoint__syscalls__sys_exit_read *args)
{
    return sys_exit(args, args->ret);
}

/* ---- Go crypto/tls.(*Conn).Write / Read: uprobes on the entry and on every RET ----------- */

static __always_inline int go_entry(struct pt_regs *ctx, u32 kind)
{
    struct tracer_config *cfg = cfg_get();
    struct members_offset *mo;
    struct go_proc_info *gi;
    struct go_key key = {};
    struct go_call call = {};
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (!cfg || !cfg->events)
        return 0;
    gi = proc_info_map.lookup(&pid);
    mo = mo_get();
    if (!gi || !mo)
        return 0;
    /* the receiver: first argument (register ABI), or 8(SP) (stack ABI) */
    call.conn = (gi->flags & GO_STACK_ABI) ? go_stack_word(ctx, 8) : (u64)GO_ARG1(ctx);
    call.fd = go_conn_fd(gi, call.conn);
    key.pid = pid;
    key.kind = kind;
    key.goid = go_goid(ctx, gi, mo);
    go_calls.update(&key, &call);
    return 0;
}

static __always_inline int go_ret(struct pt_regs *ctx, u32 kind)
{
    struct members_offset *mo;
    struct go_proc_info *gi;
    struct go_call *call;
    struct go_key key = {};
    struct tracer_event ev = {};
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    gi = proc_info_map.lookup(&pid);
    mo = mo_get();
    if (!gi || !mo)
        return 0;
    key.pid = pid;
    key.kind = kind;
    key.goid = go_goid(ctx, gi, mo);
    call = go_calls.lookup(&key);
    if (!call)
        return 0;
    ev.kind = kind;
    ev.pid = pid;
    ev.tid = (u32)bpf_get_current_pid_tgid();
    ev.goid = key.goid;
    ev.conn = call->conn;
    ev.fd = call->fd;
    /* n, the first result: in the first result register, or after receiver+slice on the
     * stack (8 + 8 + 24 bytes above the return address) */
    ev.ret = (gi->flags & GO_STACK_ABI) ? (s64)go_stack_word(ctx, 40) : (s64)GO_RET1(ctx);
    events.perf_submit(ctx, &ev, sizeof(ev));
    go_calls.delete(&key);
    return 0;
}

int go_tls_write_entry(struct pt_regs *ctx) { return go_entry(ctx, EV_GO_TLS_WRITE); }
int go_tls_write_ret(struct pt_regs *ctx) { return go_ret(ctx, EV_GO_TLS_WRITE); }
int go_tls_read_entry(struct pt_regs *ctx) { return go_entry(ctx, EV_GO_TLS_READ); }
int go_tls_read_ret(struct pt_regs *ctx) { return go_ret(ctx, EV_GO_TLS_READ); }

/* ---- verify: walk a known fd of the verifying process and record what the offsets give.
 * On pwrite64, which no other program uses and which fails on a socket (ESPIPE) before
 * touching it: probing a socket changes nothing the checks compare. */

int verify_probe(struct tracepoint__syscalls__sys_enter_pwrite64 *args)
{
    struct tracer_config *cfg = cfg_get();
    struct members_offset *mo;
    struct verify_rec *v;
    u32 k = 0, steps = 0;
    u64 id = bpf_get_current_pid_tgid();
    void *task, *file, *sk, *inode, *sb, *dentry, *parent, *vfsmnt, *mnt, *ns, *fop;
    if (!cfg || !cfg->verify_tgid || (id >> 32) != cfg->verify_tgid ||
        (u32)args->fd != cfg->verify_fd)
        return 0;
    mo = mo_get();
    v = verify_out.lookup(&k);
    if (!mo || !v)
        return 0;
    task = (void *)bpf_get_current_task();
    v->task_state = rd_u32(task, mo->task_state);
    v->fsbase = rd_u64(task, mo->task_fsbase);
    file = fd_file(mo, task, args->fd, &steps);
    v->file = (u64)file;
    v->f_pos = (s64)rd_u64(file, mo->file_f_pos);
    fop = rd_ptr(file, mo->file_f_op);
    v->read_iter = rd_u64(fop, mo->fop_read_iter);
    inode = rd_ptr(file, mo->file_f_inode);
    v->i_mode = rd_u16(inode, mo->inode_i_mode);
    sb = rd_ptr(inode, mo->inode_i_sb);
    v->s_dev = rd_u32(sb, mo->sb_s_dev);
    dentry = rd_ptr(file, mo->file_dentry);
    parent = rd_ptr(dentry, mo->dentry_parent);
    v->name[0] = 0;
    v->parent[0] = 0;
    if (dentry)
        bpf_probe_read_str(v->name, sizeof(v->name), rd_ptr(dentry, mo->dentry_name));
    if (parent)
        bpf_probe_read_str(v->parent, sizeof(v->parent), rd_ptr(parent, mo->dentry_name));
    vfsmnt = rd_ptr(file, mo->file_mnt);
    mnt = (vfsmnt && mo->mount_mnt != ABSENT) ? (char *)vfsmnt - mo->mount_mnt : 0;
    v->mnt_id = rd_u32(mnt, mo->mount_mnt_id);
    ns = rd_ptr(mnt, mo->mount_mnt_ns);
    v->mnt_ns_inum = rd_u32(ns, mo->mnt_ns_inum);
    /* the socket fields are read whatever the file is: user space knows which fd it probed */
    v->sock_file = rd_u64(rd_ptr(file, mo->file_private_data), mo->socket_file);
    sk = file_sock(mo, file);
    if (sk)
        steps |= 8;
    v->family = rd_u16(sk, mo->skc_family);
    v->state = rd_u8(sk, mo->skc_state);
    v->sk_type = rd_bits(sk, mo->sk_type, mo->sk_type_shift, mo->sk_type_width);
    v->sk_protocol = rd_bits(sk, mo->sk_protocol, mo->sk_protocol_shift, mo->sk_protocol_width);
    v->ipv6only = rd_bits(sk, mo->skc_ipv6only, mo->skc_ipv6only_shift, mo->skc_ipv6only_width);
    v->num = rd_u16(sk, mo->skc_num);
    v->dport = be16(rd_u16(sk, mo->skc_dport));
    v->saddr = rd_u32(sk, mo->skc_rcv_saddr);
    v->daddr = rd_u32(sk, mo->skc_daddr);
    __builtin_memset(v->saddr6, 0, 16);
    __builtin_memset(v->daddr6, 0, 16);
    if (sk && mo->skc_v6_rcv_saddr != ABSENT && mo->skc_v6_daddr != ABSENT) {
        bpf_probe_read(v->saddr6, 16, (const char *)sk + mo->skc_v6_rcv_saddr);
        bpf_probe_read(v->daddr6, 16, (const char *)sk + mo->skc_v6_daddr);
    }
    v->copied_seq = rd_u32(sk, mo->tcp_copied_seq);
    v->write_seq = rd_u32(sk, mo->tcp_write_seq);
    v->steps = steps;
    v->seq += 1;
    return 0;
}
