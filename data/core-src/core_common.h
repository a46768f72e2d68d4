/* Shared by the CO-RE test programs (built against a vmlinux.h that `bpftool btf dump
 * format c` made from dbhive's BTF) and read by core_loader.c.  `dbhive_config[0]` is the tgid
 * whose events count, `dbhive_config[1]` a TCP port; each program fills `dbhive_results[0]` once. */
#ifndef CORE_COMMON_H
#define CORE_COMMON_H

#define NVALS 24

struct result {
	__u64 hits;
	__u64 v[NVALS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct result);
} dbhive_results SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[4]);
} dbhive_config SEC(".maps");

/* the result slot to fill, or NULL when this event is not ours (or already recorded) */
static __always_inline struct result *our_slot(int any_task)
{
	__u32 k = 0;
	__u64 *cfg = bpf_map_lookup_elem(&dbhive_config, &k);
	struct result *r = bpf_map_lookup_elem(&dbhive_results, &k);

	if (!cfg || !r || r->hits)
		return 0;
	if (!any_task && (bpf_get_current_pid_tgid() >> 32) != cfg[0])
		return 0;
	return r;
}

static __always_inline __u64 our_port(void)
{
	__u32 k = 0;
	__u64 *cfg = bpf_map_lookup_elem(&dbhive_config, &k);

	return cfg ? cfg[1] : 0;
}

char LICENSE[] SEC("license") = "GPL";
#endif
