/* sock_flags: struct sock's type/protocol word in its shapes across kernels, for the tracer's
 * sock-flags test.  gcc places the bitfields (the oracle); `pahole -J` turns the DWARF into
 * BTF; the test resolves the tracer's sk_type/sk_protocol/skc_ipv6only fields from that BTF
 * (and from a DB built from it), then a BPF program decodes a struct this program fills.
 *
 *   -DSHAPE_PRE56    Linux 4.14-5.5: sk_protocol:8 and sk_type:16 are bitfields of the word
 *                    at __sk_flags_offset (include/net/sock.h of 4.14)
 *   -DSHAPE_UNNAMED  the same word with the bitfields unnamed: only __sk_flags_offset and
 *                    the kernel's SK_FL_* shifts give them
 *   (neither)        Linux 5.6+: u16 sk_type, u16 sk_protocol
 *
 * Protocol: for each line "TYPE PROTO V6ONLY" on stdin, fill a struct sock (every other
 * bit set), pwrite64(-1, &sk, sizeof sk, 0) (the BPF program reads the buffer at the
 * syscall's entry; the call itself fails with EBADF) and print "done".
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct sock_common {
	unsigned int skc_daddr;
	unsigned int skc_rcv_saddr;
	unsigned int skc_hash;
	unsigned short skc_dport;
	unsigned short skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	unsigned char skc_reuse : 4, skc_reuseport : 1, skc_ipv6only : 1, skc_net_refcnt : 1;
	char skc_rest[116];
};

struct sock {
	struct sock_common __sk_common;
	char sk_before[228];
#if defined(SHAPE_PRE56)
	unsigned int __sk_flags_offset[0];
	unsigned int sk_padding : 2, sk_no_check_tx : 1, sk_no_check_rx : 1, sk_userlocks : 4,
		sk_protocol : 8, sk_type : 16;
#elif defined(SHAPE_UNNAMED)
#define SK_FL_PROTO_SHIFT 8
#define SK_FL_PROTO_MASK 0x0000ff00
#define SK_FL_TYPE_SHIFT 16
#define SK_FL_TYPE_MASK 0xffff0000
	unsigned int __sk_flags_offset[0];
	unsigned int sk_padding : 2, sk_no_check_tx : 1, sk_no_check_rx : 1, sk_userlocks : 4,
		: 8, : 16;
#else
	unsigned char sk_padding : 1, sk_kern_sock : 1, sk_no_check_tx : 1, sk_no_check_rx : 1,
		sk_userlocks : 4;
	unsigned char sk_pacing_shift;
	unsigned short sk_type;
	unsigned short sk_protocol;
#endif
	unsigned short sk_gso_max_segs;
	char sk_after[98];
};

int main(void)
{
	struct sock sk;
	unsigned int type, proto, v6only;
	while (scanf("%u %u %u", &type, &proto, &v6only) == 3) {
		memset(&sk, 0xff, sizeof(sk));
		sk.__sk_common.skc_ipv6only = v6only;
#if defined(SHAPE_UNNAMED)
		unsigned int *word = (unsigned int *)((char *)&sk + offsetof(struct sock, __sk_flags_offset));
		*word = (*word & ~(SK_FL_TYPE_MASK | SK_FL_PROTO_MASK)) |
			(type << SK_FL_TYPE_SHIFT) | (proto << SK_FL_PROTO_SHIFT);
#else
		sk.sk_type = type;
		sk.sk_protocol = proto;
#endif
		pwrite(-1, &sk, sizeof(sk), 0);
		printf("done\n");
		fflush(stdout);
	}
	return 0;
}
