/* CO-RE field relocations on task_struct and what it points to: plain fields, pointer
 * chains, an embedded struct (thread.fsbase), a char array, a field that exists only in
 * older kernels (a ___flavor struct).  Values land in results[0].v[]:
 *   0 pid  1 tgid  2 real_parent->tgid  3 cred->uid  4 nsproxy->mnt_ns->ns.inum
 *   5,6 comm (16 bytes)  7 offsetof(pid)  8 sizeof(comm)  9 exists(task_struct___old.state)
 *  10 files->fdt->max_fds  11 offsetof(thread.fsbase)  12 thread.fsbase  13 files->count */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "core_common.h"

struct task_struct___old {
	long state;
} __attribute__((preserve_access_index));

SEC("tracepoint/syscalls/sys_enter_getppid")
int core_task(void *ctx)
{
	struct result *r = our_slot(0);
	struct task_struct *t = (void *)bpf_get_current_task();

	if (!r)
		return 0;
	r->v[0] = BPF_CORE_READ(t, pid);
	r->v[1] = BPF_CORE_READ(t, tgid);
	r->v[2] = BPF_CORE_READ(t, real_parent, tgid);
	r->v[3] = BPF_CORE_READ(t, cred, uid.val);
	r->v[4] = BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
	bpf_core_read(&r->v[5], 16, &t->comm);
	r->v[7] = bpf_core_field_offset(struct task_struct, pid);
	r->v[8] = bpf_core_field_size(struct task_struct, comm);
	r->v[9] = bpf_core_field_exists(struct task_struct___old, state);
	r->v[10] = BPF_CORE_READ(t, files, fdt, max_fds);
	r->v[11] = bpf_core_field_offset(struct task_struct, thread.fsbase);
	r->v[12] = BPF_CORE_READ(t, thread.fsbase);
	r->v[13] = BPF_CORE_READ(t, files, count.counter);
	r->hits = 1;
	return 0;
}
