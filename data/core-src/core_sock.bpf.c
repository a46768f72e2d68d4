/* CO-RE on the networking side: the tracepoint's own record (trace_event_raw_*, relocated
 * too), struct sock_common members inside anonymous unions/structs, a bitfield read
 * (skc_ipv6only: byte offset, size, shifts), tcp_sock offsets.  results[0].v[]:
 *   0 skc_family  1 skc_num  2 ntohs(skc_dport)  3 skc_rcv_saddr  4 skc_daddr
 *   5 skc_ipv6only  6 sk_protocol  7 sk_type  8 newstate  9 oldstate  10 sport  11 dport
 *  12 offsetof(tcp_sock, copied_seq)  13 offsetof(tcp_sock, write_seq)  14 skc_state */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "core_common.h"

SEC("tracepoint/sock/inet_sock_set_state")
int core_sock(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct result *r;
	struct sock *sk;
	struct sock_common *c;

	/* the client socket becoming ESTABLISHED (softirq: whichever task is current) */
	if (ctx->protocol != 6 /* IPPROTO_TCP */ || ctx->newstate != 1 /* TCP_ESTABLISHED */ ||
	    !ctx->dport || ctx->dport != our_port())
		return 0;
	r = our_slot(1);
	if (!r)
		return 0;
	sk = (struct sock *)ctx->skaddr;
	c = &sk->__sk_common;
	r->v[0] = BPF_CORE_READ(sk, __sk_common.skc_family);
	r->v[1] = BPF_CORE_READ(sk, __sk_common.skc_num);
	r->v[2] = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	r->v[3] = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
	r->v[4] = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	r->v[5] = BPF_CORE_READ_BITFIELD_PROBED(c, skc_ipv6only);
	r->v[6] = BPF_CORE_READ(sk, sk_protocol);
	r->v[7] = BPF_CORE_READ(sk, sk_type);
	r->v[8] = ctx->newstate;
	r->v[9] = ctx->oldstate;
	r->v[10] = ctx->sport;
	r->v[11] = ctx->dport;
	r->v[12] = bpf_core_field_offset(struct tcp_sock, copied_seq);
	r->v[13] = bpf_core_field_offset(struct tcp_sock, write_seq);
	r->v[14] = BPF_CORE_READ(sk, __sk_common.skc_state);
	r->hits = 1;
	return 0;
}
