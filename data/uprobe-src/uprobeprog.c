/* uprobeprog: a C test program for `resolver expr 'P …'` / `'R …'` (uprobe expressions).
 *
 *   uprobeprog N      wait for a line on stdin (the probes are in place), then call
 *                     handle_req() and the libc functions below N times, printing every
 *                     value a probe is meant to read, one "key=value" list per call
 *
 * Built with -g by tests/support/uprobe_builds.py (PIE and not); its DWARF is what the
 * resolver reads: structs with nested members, an array of structs, bitfields, strings,
 * a typedef'd struct and a pointer chain.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct point {
	short x;
	short y;
};

typedef struct {
	unsigned int counter;
} counter_t;

struct inner {
	int id;
	char tag[8];
	unsigned int kind : 3;
	unsigned int level : 5;
	signed int delta : 7;
	unsigned long long wide : 40;
	struct point where;
};

struct req {
	long seq;
	struct inner in;
	const char *name;
	struct req *parent;
	unsigned char flag_a : 1, flag_b : 4;
	int arr[4];
	struct point pts[3];
	counter_t hits;
};

__attribute__((noinline)) long handle_req(struct req *r, int k, const char *label)
{
	volatile long v = r->seq * 3 + k + (long)strlen(label);
	return v;
}

__attribute__((noinline)) struct req *pick_parent(struct req *r)
{
	return r->parent;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 1;
	char line[64];
	static const char *names[] = {"alpha", "bravo-long-name", "c"};
	struct req parent = {.seq = 1000, .name = "the-parent"};
	struct timespec ts;

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("ready\n");
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	for (int i = 0; i < n; i++) {
		struct req r;
		memset(&r, 0, sizeof(r));
		r.seq = 7 + i * 11;
		r.in.id = 40000 + i;
		snprintf(r.in.tag, sizeof(r.in.tag), "t%d", i);
		r.in.kind = (unsigned)(i + 5) % 8;
		r.in.level = (unsigned)(i * 7 + 3) % 32;
		r.in.delta = -(i % 50) - 3;
		r.in.wide = 0x123456789aULL + (unsigned long long)i;
		r.in.where.x = (short)(-100 - i);
		r.in.where.y = (short)(200 + i);
		r.name = names[i % 3];
		r.parent = &parent;
		r.flag_a = (unsigned)i % 2;
		r.flag_b = (unsigned)(i + 9) % 16;
		r.arr[2] = 31337 + i;
		r.pts[1].y = (short)(-7 - i);
		r.hits.counter = 99u + (unsigned)i;
		parent.seq = 1000 + i;
		long ret = handle_req(&r, i * 2 + 1, r.name);
		struct req *pp = pick_parent(&r);
		printf("call i=%d seq=%ld id=%d tag=%s kind=%u level=%u delta=%d wide=%llu x=%d y=%d "
		       "name=%s parent_seq=%ld parent_name=%s flag_a=%u flag_b=%u arr2=%d pts1y=%d "
		       "hits=%u k=%d label=%s ret=%ld pp_seq=%ld\n",
		       i, r.seq, r.in.id, r.in.tag, r.in.kind, r.in.level, r.in.delta,
		       (unsigned long long)r.in.wide, r.in.where.x, r.in.where.y, r.name,
		       parent.seq, parent.name, r.flag_a, r.flag_b, r.arr[2], r.pts[1].y,
		       r.hits.counter, i * 2 + 1, r.name, ret, pp->seq);
		/* libc (its types from Debian's libc6-dbg debug file, found by build-id) */
		char text[32];
		snprintf(text, sizeof(text), "line-%d;", i);
		FILE *out = stderr;
		fputs(text, out);
		ts.tv_sec = 0;
		ts.tv_nsec = 1000 + i;
		nanosleep(&ts, NULL);
		size_t w = fwrite("abc", 1, (size_t)(i % 3) + 1, out);
		printf("libc i=%d text=%s fd=%d nsec=%ld fwrite=%zu\n", i, text,
		       fileno(out), ts.tv_nsec, w);
	}
	printf("done\n");
	return 0;
}
