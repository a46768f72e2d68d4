// SPDX-License-Identifier: GPL-2.0
/* A custom out-of-tree module for kobuild's tests: its own structs, unions, enums and
 * typedefs (nested and anonymous members, bitfields, arrays, flexible arrays, function
 * pointers), kernel structs embedded and pointed to, and functions taking them.
 * Built with -g against the Debian 6.1 headers by scripts/make_kobuild_modules.py. */
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/skbuff.h>
#include <linux/fs.h>
#include <linux/sched.h>
#include <linux/workqueue.h>

enum kotest_state { KOTEST_IDLE, KOTEST_RUNNING = 5, KOTEST_BROKEN = -3 };

typedef u32 kotest_id_t;

struct kotest_stats {
	u64 packets;
	u64 bytes;
	u32 errors[4];
};

union kotest_addr {
	__be32 v4;
	u8 v6[16];
	struct {
		u16 port;
		u16 proto;
	} pp;
};

typedef struct {
	int a;
	short b;
} kotest_pair_t;

struct kotest_dev {
	struct list_head list;
	kotest_id_t id;
	unsigned int enabled:1, mode:3, prio:4;
	unsigned int :0;
	u8 flags:2;
	enum kotest_state state;
	union {
		struct {
			u32 lo;
			u32 hi;
		};
		u64 both;
	};
	struct {
		char name[IFNAMSIZ];
		u16 vlan[2][3];
		struct {
			u8 depth:5;
			u8 full:1;
		} ring;
	} info;
	union kotest_addr addr;
	struct kotest_stats stats[2];
	kotest_pair_t pair;
	struct net_device *netdev;
	struct sk_buff_head queue;
	struct work_struct work;
	struct task_struct *owner;
	void (*callback)(struct kotest_dev *kd, int why);
	struct kotest_dev *next;
	char tail[];
};

struct kotest_packed {
	u8 tag;
	u64 value;
	u32 wide:20;
	u32 narrow:12;
} __packed;

static struct kotest_dev kotest_devs[2];

noinline int kotest_xmit(struct sk_buff *skb, struct kotest_dev *kd)
{
	kd->stats[0].packets++;
	kd->stats[0].bytes += skb->len;
	return skb->len + kd->id;
}
EXPORT_SYMBOL_GPL(kotest_xmit);

noinline long kotest_account(struct kotest_dev *kd, const struct kotest_stats *st,
			     kotest_pair_t pair, union kotest_addr *addr)
{
	kd->stats[1] = *st;
	kd->addr = *addr;
	return kd->stats[1].bytes + pair.a + pair.b;
}
EXPORT_SYMBOL_GPL(kotest_account);

noinline void kotest_set_state(struct kotest_dev *kd, enum kotest_state s, ...)
{
	kd->state = s;
}
EXPORT_SYMBOL_GPL(kotest_set_state);

noinline u64 kotest_packed_sum(struct kotest_packed *p, struct file *f, struct task_struct *t)
{
	return p->value + p->wide + p->narrow + f->f_pos + t->pid;
}
EXPORT_SYMBOL_GPL(kotest_packed_sum);

static noinline int kotest_local(struct kotest_dev *kd, kotest_id_t id)
{
	kd->id = id;
	return kd->enabled + kd->mode;
}

static void kotest_work(struct work_struct *w)
{
	struct kotest_dev *kd = container_of(w, struct kotest_dev, work);

	kotest_local(kd, kd->id + 1);
}

static int __init kotest_init(void)
{
	INIT_LIST_HEAD(&kotest_devs[0].list);
	INIT_WORK(&kotest_devs[0].work, kotest_work);
	skb_queue_head_init(&kotest_devs[0].queue);
	return kotest_local(&kotest_devs[1], 7) < 0;
}

static void __exit kotest_exit(void)
{
}

module_init(kotest_init);
module_exit(kotest_exit);
MODULE_LICENSE("GPL");
MODULE_VERSION("1.2");
MODULE_DESCRIPTION("dbhive kobuild test module");
