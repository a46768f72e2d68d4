/* Every other CO-RE relocation kind (built with clang 16: clang 14 has no TYPE_MATCHES):
 * type exists / size / matches / target id / local id, enum value exists / value (a 64-bit
 * enum included), field signed / exists / size, array-element offsets, a bitfield read.
 * results[0].v[]:
 *   0 exists(task_struct)  1 sizeof(task_struct)  2 exists(dbhive_no_such_type)
 *   3 exists(BPF_MAP_TYPE_RINGBUF)  4 BPF_MAP_TYPE_RINGBUF  5 PERF_CONTEXT_MAX (enum64)
 *   6 matches(list_head)  7 matches(list_head___bad)  8 target id(task_struct)
 *   9 local id(task_struct)  10 signed(task_struct.pid)  11 in_execve (bitfield)
 *  12 exists(task_struct.__state)  13 sizeof(task_struct.__state) (0 without it)
 *  14 offsetof(comm[3])
 *  15 exists(enum bpf_func_id___x::BPF_FUNC_dbhive_none___x)  16 sizeof(struct sock)
 *  17 exists(struct sock_common.skc_v6_daddr) */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "core_common.h"

struct dbhive_no_such_type {
	int a;
};

struct list_head___bad {
	int next;
};

enum bpf_func_id___x {
	BPF_FUNC_dbhive_none___x = 4242,
};

SEC("tracepoint/syscalls/sys_enter_getppid")
int core_kinds(void *ctx)
{
	struct result *r = our_slot(0);
	struct task_struct *t = (void *)bpf_get_current_task();

	if (!r)
		return 0;
	r->v[0] = bpf_core_type_exists(struct task_struct);
	r->v[1] = bpf_core_type_size(struct task_struct);
	r->v[2] = bpf_core_type_exists(struct dbhive_no_such_type);
	r->v[3] = bpf_core_enum_value_exists(enum bpf_map_type, BPF_MAP_TYPE_RINGBUF);
	r->v[4] = bpf_core_enum_value(enum bpf_map_type, BPF_MAP_TYPE_RINGBUF);
	r->v[5] = bpf_core_enum_value(enum perf_callchain_context, PERF_CONTEXT_MAX);
	r->v[6] = bpf_core_type_matches(struct list_head);
	r->v[7] = bpf_core_type_matches(struct list_head___bad);
	r->v[8] = bpf_core_type_id_kernel(struct task_struct);
	r->v[9] = bpf_core_type_id_local(struct task_struct);
	r->v[10] = __builtin_preserve_field_info(((struct task_struct *)0)->pid, BPF_FIELD_SIGNED);
	r->v[11] = BPF_CORE_READ_BITFIELD_PROBED(t, in_execve);
	r->v[12] = bpf_core_field_exists(struct task_struct, __state);
	/* the size of a field a kernel lacks (5.10 has no __state) is a poisoned instruction:
	 * kept where the verifier can see it is never reached */
	if (bpf_core_field_exists(struct task_struct, __state))
		r->v[13] = bpf_core_field_size(struct task_struct, __state);
	r->v[14] = bpf_core_field_offset(struct task_struct, comm[3]);
	r->v[15] = bpf_core_enum_value_exists(enum bpf_func_id___x, BPF_FUNC_dbhive_none___x);
	r->v[16] = bpf_core_type_size(struct sock);
	r->v[17] = bpf_core_field_exists(struct sock_common, skc_v6_daddr);
	r->hits = 1;
	return 0;
}
