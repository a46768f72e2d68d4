// SPDX-License-Identifier: GPL-2.0
/* A kernel module that pulls in the kernel's own headers, for DWARF fixtures built by
 * scripts/make_dwarf_fixtures.py with the installed kernel build tree (kbuild). */
#include <linux/module.h>
#include <linux/sched.h>
#include <linux/fs.h>
#include <linux/fdtable.h>
#include <linux/mount.h>
#include <linux/skbuff.h>
#include <linux/tcp.h>
#include <net/sock.h>
#include <net/inet_sock.h>

struct dbhive_fixture_state {
	struct list_head list;
	unsigned int flags:3, mode:5;
	struct sock *sk;
	struct file *file;
	char name[TASK_COMM_LEN];
};

static struct dbhive_fixture_state state;

noinline int dbhive_fixture_probe(struct task_struct *t, struct file *f, struct sock *sk,
				  struct sk_buff *skb)
{
	state.file = f;
	state.sk = sk;
	return t->pid + (int)f->f_pos + sk->sk_protocol + skb->len + tcp_sk(sk)->copied_seq;
}
EXPORT_SYMBOL_GPL(dbhive_fixture_probe);

static int __init dbhive_fixture_init(void)
{
	INIT_LIST_HEAD(&state.list);
	return 0;
}

static void __exit dbhive_fixture_exit(void)
{
}

module_init(dbhive_fixture_init);
module_exit(dbhive_fixture_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dbhive DWARF fixture");
