#include "common.h"

/* Same name, different layout in types_b.c: the reader must keep both. */
struct dup_layout { int a; long b; };

/* Only declared here; types_b.c defines it (declaration vs definition across units). */
struct decl_elsewhere;
struct holder_a { struct decl_elsewhere *p; struct dup_layout d; };

static struct holder_a ha;
struct sock_like global_sk;
struct with_uapi global_w;

int use_a(struct sock_like *sk, struct with_uapi *w)
{
	struct local_only { int x; short y; } lo = { 1, 2 };   /* declared inside a function */
	volatile struct local_only *vlo = &lo;
	return sk->__sk_common.skc_family + w->insn.imm + vlo->y + (int)ha.d.b;
}

static int __attribute__((noinline)) helper_static(const char *s, ...)
{
	return s[0];
}

int main(void)
{
	union u_mixed u = { 0 };
	struct packed_bits p = { 0 };
	return use_a(&global_sk, &global_w) + use_b(&global_sk, &u, &p) + helper_static("x", 1);
}
