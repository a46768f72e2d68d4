#include "common.h"

struct dup_layout { char tag; int a[3]; };          /* differs from types_a.c */

struct decl_elsewhere { int defined_here; struct list_head node; };
struct holder_b { struct decl_elsewhere e; struct dup_layout d; enum big_values v; };

struct holder_b global_hb;

int use_b(struct sock_like *sk, union u_mixed *u, struct packed_bits *p)
{
	return sk->sk_protocol + u->halves.hi + (int)p->z + global_hb.e.defined_here;
}
