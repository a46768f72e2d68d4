// A small libbpf loader for dbhive's BTF tests (Debian's libbpf-dev; built by
// scripts/make_core_objects.py).  It prints one JSON object on stdout.
//
//   core_loader btf-load FILE
//       BPF_BTF_LOAD of FILE into the running kernel: {"loaded": true, "id": N} or the
//       kernel's verdict and log ({"loaded": false, "errno": E, "log": "..."}, exit 1).
//   core_loader run OBJECT [--btf FILE] [--trigger getppid|tcp] [--no-attach]
//       Open OBJECT with btf_custom_path = FILE (CO-RE relocations against FILE instead of
//       the kernel's own BTF), load it, print every program's instructions after libbpf
//       relocated them (map fds masked), then attach, trigger the event, and print the
//       values the program recorded in dbhive_results[0] together with what user space
//       knows of the same things (pid, uid, ports, ...).
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <asm/prctl.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define NVALS 24

struct result {
	__u64 hits;
	__u64 v[NVALS];
};

static char libbpf_log[1 << 16];
static size_t libbpf_log_len;
/* libbpf's own account of each CO-RE relocation it applied ("patched insn #12 (LDX/ST/STX)
 * off 1264 -> 1264", "substituting insn #5 w/ invalid insn") */
static char relo_log[1 << 18];
static size_t relo_log_len;

static int collect(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG) {
		char line[1024];
		int n = vsnprintf(line, sizeof(line), fmt, ap);

		if (n > 0 && (strstr(line, "patched insn") || strstr(line, "substituting insn")) &&
		    relo_log_len + (size_t)n < sizeof(relo_log)) {
			memcpy(relo_log + relo_log_len, line, n);
			relo_log_len += n;
		}
		return 0;
	}
	if (libbpf_log_len < sizeof(libbpf_log) - 1) {
		int n = vsnprintf(libbpf_log + libbpf_log_len,
				  sizeof(libbpf_log) - libbpf_log_len, fmt, ap);
		if (n > 0)
			libbpf_log_len += (size_t)n;
		if (libbpf_log_len >= sizeof(libbpf_log))
			libbpf_log_len = sizeof(libbpf_log) - 1;
	}
	return 0;
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c == '\n')
			printf("\\n");
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void *read_file(const char *path, size_t *size)
{
	FILE *f = fopen(path, "rb");
	void *buf;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
		fclose(f);
		return NULL;
	}
	buf = malloc(n ? n : 1);
	if (buf && fread(buf, 1, n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*size = n;
	return buf;
}

static int btf_load(const char *path)
{
	static char log[1 << 24];
	size_t size;
	void *data = read_file(path, &size);
	LIBBPF_OPTS(bpf_btf_load_opts, opts, .log_buf = log, .log_size = sizeof(log),
		    .log_level = 1);
	int fd;

	if (!data) {
		printf("{\"loaded\": false, \"errno\": %d, \"log\": \"cannot read the file\"}\n",
		       errno);
		return 1;
	}
	/* without a log first (the kernel logs every type at level 1, and a full log buffer
	 * is an error of its own), then again with one to say why */
	fd = bpf_btf_load(data, size, NULL);
	if (fd < 0) {
		int err = errno;
		size_t n;

		bpf_btf_load(data, size, &opts);
		n = strlen(log);
		printf("{\"loaded\": false, \"errno\": %d, \"log\": ", err);
		json_str(n > 4000 ? log + n - 4000 : log);
		printf("}\n");
		return 1;
	}
	{
		struct bpf_btf_info info = {};
		__u32 len = sizeof(info);
		bpf_obj_get_info_by_fd(fd, &info, &len);
		printf("{\"loaded\": true, \"id\": %u, \"bytes\": %zu}\n", info.id, size);
	}
	close(fd);
	free(data);
	return 0;
}

static void print_insns(struct bpf_object *obj)
{
	struct bpf_program *prog;
	int first = 1;

	printf("\"programs\": {");
	bpf_object__for_each_program(prog, obj) {
		const struct bpf_insn *in = bpf_program__insns(prog);
		size_t n = bpf_program__insn_cnt(prog);
		int pseudo_next = 0;

		printf("%s\"%s\": [", first ? "" : ", ", bpf_program__name(prog));
		first = 0;
		for (size_t i = 0; i < n; i++) {
			struct bpf_insn x = in[i];
			/* map fds differ from run to run: mask them (both halves of an ldimm64) */
			if (pseudo_next) {
				x.imm = 0;
				pseudo_next = 0;
			} else if (x.code == (BPF_LD | BPF_IMM | BPF_DW) && x.src_reg) {
				x.imm = 0;
				pseudo_next = 1;
			}
			printf("%s\"%02x%x%x%04x%08x\"", i ? ", " : "", x.code, x.dst_reg, x.src_reg,
			       (__u16)x.off, (__u32)x.imm);
		}
		printf("]");
	}
	printf("}");
}

static int tcp_trigger(struct bpf_map *config, __u64 *cfg, __u64 *truth)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int srv = socket(AF_INET, SOCK_STREAM, 0), cli, acc;
	__u32 k = 0;

	/* the port is known once bound; listen() (CLOSE -> LISTEN, dport 0) comes after it */
	if (srv < 0 || bind(srv, (void *)&a, sizeof(a)) || getsockname(srv, (void *)&a, &len))
		return -1;
	cfg[1] = ntohs(a.sin_port);
	if (bpf_map__update_elem(config, &k, sizeof(k), cfg, 4 * sizeof(__u64), 0) ||
	    listen(srv, 1))
		return -1;
	cli = socket(AF_INET, SOCK_STREAM, 0);
	if (cli < 0 || connect(cli, (void *)&a, sizeof(a)))
		return -1;
	acc = accept(srv, NULL, NULL);
	len = sizeof(a);
	getsockname(cli, (void *)&a, &len);
	truth[0] = ntohs(a.sin_port);      /* the client's port: skc_num of its sock */
	truth[1] = cfg[1];
	close(acc);
	close(cli);
	close(srv);
	return 0;
}

static int run(int argc, char **argv)
{
	const char *object = argv[2], *btf = NULL, *trigger = "getppid";
	int attach = 1;
	struct bpf_object *obj;
	struct bpf_program *prog;
	struct bpf_map *results, *config;
	struct result res = {};
	__u64 cfg[4] = {}, truth[2] = {};
	__u32 k = 0;
	int err;

	for (int i = 3; i < argc; i++) {
		if (!strcmp(argv[i], "--btf") && i + 1 < argc)
			btf = argv[++i];
		else if (!strcmp(argv[i], "--trigger") && i + 1 < argc)
			trigger = argv[++i];
		else if (!strcmp(argv[i], "--no-attach"))
			attach = 0;
		else {
			fprintf(stderr, "core_loader: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = btf);
	obj = bpf_object__open_file(object, &opts);
	if (!obj) {
		printf("{\"loaded\": false, \"stage\": \"open\", \"errno\": %d, \"log\": ", errno);
		json_str(libbpf_log);
		printf("}\n");
		return 1;
	}
	err = bpf_object__load(obj);
	if (err) {
		printf("{\"loaded\": false, \"stage\": \"load\", \"errno\": %d, \"log\": ", -err);
		json_str(libbpf_log);
		printf("}\n");
		return 1;
	}
	printf("{\"loaded\": true, \"relocations\": ");
	json_str(relo_log);
	printf(", ");
	print_insns(obj);
	results = bpf_object__find_map_by_name(obj, "dbhive_results");
	config = bpf_object__find_map_by_name(obj, "dbhive_config");
	if (attach && results && config) {
		cfg[0] = getpid();
		if (bpf_map__update_elem(config, &k, sizeof(k), cfg, sizeof(cfg), 0))
			goto attach_failed;
		bpf_object__for_each_program(prog, obj) {
			if (!bpf_program__attach(prog))
				goto attach_failed;
		}
		if (!strcmp(trigger, "tcp")) {
			if (tcp_trigger(config, cfg, truth))
				goto attach_failed;
		} else {
			for (int i = 0; i < 3; i++)
				syscall(SYS_getppid);
		}
		if (bpf_map__lookup_elem(results, &k, sizeof(k), &res, sizeof(res), 0))
			goto attach_failed;
		printf(", \"hits\": %llu, \"values\": [", (unsigned long long)res.hits);
		for (int i = 0; i < NVALS; i++)
			printf("%s%llu", i ? ", " : "", (unsigned long long)res.v[i]);
		{
			char comm[17] = {};
			unsigned long fsbase = 0;
			struct stat st = {};

			prctl(PR_GET_NAME, comm);
			syscall(SYS_arch_prctl, ARCH_GET_FS, &fsbase);
			stat("/proc/self/ns/mnt", &st);
			printf("], \"truth\": {\"pid\": %d, \"tgid\": %d, \"ppid\": %d, \"uid\": %u, "
			       "\"mnt_ns\": %llu, \"fsbase\": %lu, \"client_port\": %llu, "
			       "\"server_port\": %llu, \"comm\": ",
			       (int)syscall(SYS_gettid), getpid(), getppid(), getuid(),
			       (unsigned long long)st.st_ino, fsbase,
			       (unsigned long long)truth[0], (unsigned long long)truth[1]);
			json_str(comm);
			printf("}");
		}
	}
	printf("}\n");
	bpf_object__close(obj);
	return 0;
attach_failed:
	printf(", \"attached\": false, \"errno\": %d, \"log\": ", errno);
	json_str(libbpf_log);
	printf("}\n");
	bpf_object__close(obj);
	return 1;
}

int main(int argc, char **argv)
{
	libbpf_set_print(collect);
	if (argc >= 3 && !strcmp(argv[1], "btf-load"))
		return btf_load(argv[2]);
	if (argc >= 3 && !strcmp(argv[1], "run"))
		return run(argc, argv);
	fprintf(stderr, "usage: core_loader btf-load FILE\n"
			"       core_loader run OBJECT [--btf FILE] [--trigger getppid|tcp] "
			"[--no-attach]\n");
	return 2;
}
