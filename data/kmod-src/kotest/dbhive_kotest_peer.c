// SPDX-License-Identifier: GPL-2.0
/* A second custom module: a struct whose name another module (dbhive_kotest) does not
 * use, and one, `kotest_shared`, that dbhive_kotest_peer defines with its own layout while
 * the kernel has a different `struct pid_entry`: pointers in this module must keep
 * reaching this module's layouts when the modules are merged into one DB. */
#include <linux/module.h>
#include <linux/list.h>

struct pid_entry {
	u64 peer_cookie;
	u32 peer_flags;
	struct pid_entry *peer_next;
};

struct kotest_peer {
	struct pid_entry *entry;
	struct pid_entry inline_entry;
	struct hlist_node node;
	u16 slots[3];
};

static struct kotest_peer peer;

noinline u64 kotest_peer_poke(struct kotest_peer *p, struct pid_entry *e)
{
	p->entry = e;
	return e->peer_cookie + p->slots[1];
}
EXPORT_SYMBOL_GPL(kotest_peer_poke);

static int __init kotest_peer_init(void)
{
	return kotest_peer_poke(&peer, &peer.inline_entry) != 0;
}

static void __exit kotest_peer_exit(void)
{
}

module_init(kotest_peer_init);
module_exit(kotest_peer_exit);
MODULE_LICENSE("GPL");
