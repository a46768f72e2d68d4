/* Shapes the kernel's headers use, for DWARF fixtures (see scripts/make_dwarf_fixtures.py).
 * Userspace C: uapi kernel headers plus kernel-like declarations. */
#ifndef DBHIVE_FIXTURE_COMMON_H
#define DBHIVE_FIXTURE_COMMON_H
#include <stddef.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <linux/if_ether.h>
#include <linux/tcp.h>

struct list_head { struct list_head *next, *prev; };
struct hlist_node { struct hlist_node *next, **pprev; };
typedef struct { int counter; } atomic_t;              /* anonymous typedef'd struct */
typedef struct { long long counter; } atomic64_t;

struct sock_common_like {                              /* anonymous unions/structs */
	union {
		__u64 skc_addrpair;
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		unsigned int skc_hash;
		__u16 skc_u16hashes[2];
	};
	unsigned short skc_family;
	volatile unsigned char skc_state;
	unsigned char skc_reuse:4;                         /* bitfields in a byte */
	unsigned char skc_reuseport:1;
	unsigned char skc_ipv6only:1;
	unsigned char skc_net_refcnt:1;
	int skc_bound_dev_if;
	struct hlist_node skc_node;
};

struct sock_like {
	struct sock_common_like __sk_common;
	unsigned int sk_padding:1, sk_kern_sock:1, sk_no_check_tx:1, sk_no_check_rx:1,
		     sk_userlocks:4, sk_protocol:8, sk_type:16;  /* pre-5.6 packed shape */
	__u64 sk_wide:40, sk_wide2:24;                     /* 64-bit storage units */
	atomic_t sk_refcnt;
	const struct proto_ops_like *sk_ops;               /* pointer to a declared-only type */
	void (*sk_data_ready)(struct sock_like *sk);
	int (*sk_backlog_rcv)(struct sock_like *sk, void *skb, ...);
	struct { atomic_t rmem_alloc; int len; void *head; } sk_backlog;  /* in-place struct */
	char comm[16];
	int grid[2][3][4];                                 /* multi-dimensional */
	struct list_head lists[2];
	unsigned long flags[0];                            /* zero-length */
};

enum sk_state { SS_FREE = 0, SS_UNCONNECTED, SS_CONNECTED = 7, SS_NEG = -2 };
enum big_values { BIG_ONE = 1, BIG_HIGH = 0xffffffffu };
typedef enum sk_state sk_state_t;

struct msg_flex {
	unsigned int len;
	enum sk_state state;
	unsigned char data[];                              /* flexible array member */
};

union u_mixed {
	__u32 word;
	float f;
	struct { __u16 lo, hi; } halves;
	unsigned char bytes[4];
};

struct __attribute__((packed)) packed_bits {
	unsigned char tag;
	__u64 z:33;                                        /* runs past an aligned unit */
	__u32 y:7;
};

struct with_uapi {
	struct bpf_insn insn;                              /* uapi bitfields (dst_reg:4, src_reg:4) */
	struct perf_event_attr attr;                       /* long run of __u64 bitfields */
	struct ethhdr eth;
	struct tcphdr tcp;                                 /* __u16 bitfields */
	struct msg_flex *msg;
	const volatile int * restrict const_vol_restrict;
	void (*handlers[3])(int);
	int (*arr_ptr)[5];
	sk_state_t st;
};

int use_a(struct sock_like *sk, struct with_uapi *w);
int use_b(struct sock_like *sk, union u_mixed *u, struct packed_bits *p);
#endif
