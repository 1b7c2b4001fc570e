//go:build ignore

/* loupe's runtime-security tracepoints: process execs and exits, and file
 * opens, of every task on the machine.
 *
 *   loupe_secev_exec     sched:sched_process_exec (tp_btf): the file
 *                        executed, argv (bounded), uid, parent.
 *   loupe_secev_exit     sched:sched_process_exit: a process (thread group
 *                        leader) ends, with its exit code.
 *   loupe_secev_open*    syscalls:sys_enter_{open,openat,openat2} keep the
 *                        path and flags per thread; the matching sys_exit
 *                        writes one record with the result.
 *
 * Everything is filtered here first (secev_config): only events some loaded
 * rule could match leave the kernel, so a node running `make -j` does not
 * flood the ring. Opens are matched against path prefixes in an LPM trie
 * keyed by the path's bytes, execs against a set of executable names. What
 * passes is rate-limited per CPU and written to this object's own ring.
 * Every decision is counted in secev_stats (sent, filtered, limited, full).
 *
 *   loupe_secev_*fileop*  renames, unlinks and chmods (secev_fileops.h).
 *
 * A relative path is made absolute against its dirfd or the cwd by walking
 * dentries (secev_path.h; bpf_d_path is not allowed here) and marked
 * SECEV_F_RESOLVED; one that cannot be is reported as given, marked
 * SECEV_F_RELATIVE: a guess is worse than a mark. Which agent reports a
 * record is decided in Go (contract.ReportsNetns) by the netns_ino
 * written here. */

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "secev.h"

char __license[] SEC("license") = "Dual MIT/GPL";

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct nsproxy {
	struct net *net_ns;
} __attribute__((preserve_access_index));

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	char comm[16];
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct nsproxy *nsproxy;
	struct mm_struct *mm;
} __attribute__((preserve_access_index));

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

struct open_how {
	__u64 flags;
	__u64 mode;
	__u64 resolve;
};

/* Set by the loader through spec.Variables before load. */
volatile const __u64 secev_rate = 2000;  /* records per second, per CPU */
volatile const __u64 secev_burst = 2000; /* bucket depth, per CPU */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* 4 MiB: ~4.5k records */
} secev_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SECEV_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} secev_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SECEV_CFG_MAX);
	__type(key, __u32);
	__type(value, __u32);
} secev_config SEC(".maps");

struct secev_lpm_key {
	__u32 prefixlen; /* bits */
	char path[SECEV_LPM_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct secev_lpm_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} secev_prefixes SEC(".maps");

struct secev_name {
	char name[SECEV_NAME_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct secev_name);
	__type(value, __u8);
} secev_exec_names SEC(".maps");

#include "secev_act.h"

struct secev_bucket {
	__u64 tokens;
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct secev_bucket);
} secev_bucket SEC(".maps");

/* An open between its enter and its exit, per thread. */
struct secev_pending {
	__u32 flags;
	__u32 mode;
	__s32 dirfd;
	__u16 syscall;
	__u16 ev_flags;
	char path[SECEV_PATH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct secev_pending);
} secev_pending SEC(".maps");

/* Scratch space for building a pending entry and an LPM key (too big for
 * the stack). */
struct secev_scratch {
	struct secev_pending p;
	struct secev_lpm_key k;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct secev_scratch);
} secev_scratch SEC(".maps");

#include "secev_path.h"

static __always_inline void stat_inc(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&secev_stats, &slot);
	if (v)
		*v += 1;
}

static __always_inline __u32 config(__u32 slot)
{
	__u32 *v = bpf_map_lookup_elem(&secev_config, &slot);
	return v ? *v : 0;
}

static __always_inline int bucket_take(__u64 now)
{
	__u32 zero = 0;
	struct secev_bucket *b = bpf_map_lookup_elem(&secev_bucket, &zero);
	if (!b)
		return 0;
	__u64 elapsed = now - b->last_ns;
	if (elapsed > 1000000000ULL)
		elapsed = 1000000000ULL;
	__u64 add = elapsed * secev_rate / 1000000000ULL;
	if (add > 0) {
		__u64 t = b->tokens + add;
		b->tokens = t > secev_burst ? secev_burst : t;
		b->last_ns = now;
	}
	if (b->tokens == 0) {
		stat_inc(SECEV_STAT_LIMITED);
		return 0;
	}
	b->tokens--;
	return 1;
}

/* reserve applies the rate limit and takes room in the ring, counting
 * either failure. */
static __always_inline struct secev_event *reserve(__u64 now)
{
	if (!bucket_take(now))
		return 0;
	struct secev_event *ev = bpf_ringbuf_reserve(&secev_events, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(SECEV_STAT_FULL);
		return 0;
	}
	return ev;
}

/* secev_zero clears a record in two halves: one memset of it all is past
 * what clang expands inline for BPF. */
static __always_inline void secev_zero(struct secev_event *ev)
{
	struct half {
		__u64 w[sizeof(struct secev_event) / 16];
	};
	_Static_assert(sizeof(struct secev_event) % 16 == 0, "secev_event halves");
	struct half *h = (struct half *)ev;
	__builtin_memset(&h[0], 0, sizeof(h[0]));
	asm volatile("" ::: "memory"); /* keeps clang from merging the two */
	__builtin_memset(&h[1], 0, sizeof(h[1]));
}

/* fill_task writes what every record carries about the current task. */
static __always_inline void fill_task(struct secev_event *ev, __u32 type, __u64 now)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u64 pidtgid = bpf_get_current_pid_tgid();
	__u64 uidgid = bpf_get_current_uid_gid();

	ev->ts_ns = now;
	ev->type = type;
	ev->pid = pidtgid >> 32;
	ev->tid = (__u32)pidtgid;
	ev->uid = (__u32)uidgid;
	ev->gid = uidgid >> 32;
	ev->netns_ino = BPF_CORE_READ(t, nsproxy, net_ns, ns.inum);
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->ppid = BPF_CORE_READ(t, real_parent, tgid);
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	BPF_CORE_READ_STR_INTO(&ev->pcomm, t, real_parent, comm);
}

/* fill_argv copies the task's argv (NUL-separated) from its memory. */
static __always_inline void fill_argv(struct secev_event *ev)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	unsigned long start = BPF_CORE_READ(t, mm, arg_start);
	unsigned long end = BPF_CORE_READ(t, mm, arg_end);
	if (!start || end <= start)
		return;
	unsigned long len = end - start;
	if (len > SECEV_ARGV_MAX) {
		len = SECEV_ARGV_MAX;
		ev->ev_flags |= SECEV_F_ARGV_TRUNC;
	}
	len &= (SECEV_ARGV_MAX - 1) | SECEV_ARGV_MAX;
	if (len > SECEV_ARGV_MAX)
		return;
	if (bpf_probe_read_user(ev->argv, len, (void *)start) == 0)
		ev->argv_len = len;
}

/* exec_wanted applies the exec filter to the new comm, which exec has
 * set to the basename of the file executed (cut to 15 bytes). */
static __always_inline int exec_wanted(void)
{
	__u32 mode = config(SECEV_CFG_EXEC);
	if (mode == 1)
		return 1;
	if (mode != 2)
		return 0;
	struct secev_name n = {};
	bpf_get_current_comm(n.name, sizeof(n.name));
	return bpf_map_lookup_elem(&secev_exec_names, &n) != 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(loupe_secev_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	__u64 now = bpf_ktime_get_boot_ns();
	int killed = secev_act_exec();
	if (!killed && !exec_wanted()) {
		stat_inc(SECEV_STAT_FILTERED);
		return 0;
	}
	struct secev_event *ev = reserve(now);
	if (!ev)
		return 0;
	secev_zero(ev);
	fill_task(ev, SECEV_EXEC, now);
	if (killed)
		ev->ev_flags |= SECEV_F_KILLED;
	const char *fn = BPF_CORE_READ(bprm, filename);
	long n = bpf_probe_read_kernel_str(ev->path, sizeof(ev->path), fn);
	if (n == sizeof(ev->path))
		ev->ev_flags |= SECEV_F_PATH_TRUNC;
	fill_argv(ev);
	stat_inc(SECEV_STAT_SENT);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int loupe_secev_exit(void *ctx)
{
	if (!config(SECEV_CFG_EXIT))
		return 0;
	__u64 pidtgid = bpf_get_current_pid_tgid();
	if ((__u32)pidtgid != pidtgid >> 32)
		return 0; /* a thread, not the process */
	__u64 now = bpf_ktime_get_boot_ns();
	struct secev_event *ev = reserve(now);
	if (!ev)
		return 0;
	secev_zero(ev);
	fill_task(ev, SECEV_EXIT, now);
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	ev->ret = BPF_CORE_READ(t, exit_code);
	stat_inc(SECEV_STAT_SENT);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* open_enter applies the open filter to the path and keeps what passes
 * for the syscall's exit. */
static __always_inline int open_enter(__u16 sys, __s32 dirfd, const char *upath, __u32 flags, __u32 mode)
{
	__u32 cfg = config(SECEV_CFG_OPEN);
	if (!cfg) {
		stat_inc(SECEV_STAT_FILTERED);
		return 0;
	}
	__u32 zero = 0;
	struct secev_scratch *s = bpf_map_lookup_elem(&secev_scratch, &zero);
	if (!s)
		return 0;
	long n = bpf_probe_read_user_str(s->p.path, sizeof(s->p.path), upath);
	if (n <= 0)
		return 0;
	s->p.ev_flags = 0;
	if (n == sizeof(s->p.path))
		s->p.ev_flags |= SECEV_F_PATH_TRUNC;
	if (s->p.path[0] != '/') {
		s->p.ev_flags |= secev_resolve(s->p.path, dirfd);
		/* The kill check needs the resolved path's length. */
		if (s->p.ev_flags & SECEV_F_RESOLVED)
			n = bpf_probe_read_kernel_str(s->k.path, SECEV_LPM_BYTES, s->p.path);
	}
	if (secev_act_open(&s->k, s->p.path, n, flags))
		s->p.ev_flags |= SECEV_F_KILLED;
	if (cfg == 2 && !(s->p.ev_flags & SECEV_F_KILLED)) {
		int pass = 0;
		if (s->p.ev_flags & SECEV_F_RELATIVE) {
			pass = config(SECEV_CFG_RELATIVE);
		} else if (secev_lpm_fill(&s->k, s->p.path) == 0) {
			pass = bpf_map_lookup_elem(&secev_prefixes, &s->k) != 0 || secev_noncanonical(s->p.path);
		}
		if (!pass) {
			stat_inc(SECEV_STAT_FILTERED);
			return 0;
		}
	}
	s->p.flags = flags;
	s->p.mode = mode;
	s->p.dirfd = dirfd;
	s->p.syscall = sys;
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&secev_pending, &tid, &s->p, BPF_ANY);
	return 0;
}

static __always_inline int open_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct secev_pending *p = bpf_map_lookup_elem(&secev_pending, &tid);
	if (!p)
		return 0;
	__u64 now = bpf_ktime_get_boot_ns();
	struct secev_event *ev = reserve(now);
	if (!ev) {
		bpf_map_delete_elem(&secev_pending, &tid);
		return 0;
	}
	secev_zero(ev);
	fill_task(ev, SECEV_OPEN, now);
	fill_argv(ev);
	ev->ret = ret;
	ev->flags = p->flags;
	ev->mode = p->mode;
	ev->dirfd = p->dirfd;
	ev->syscall = p->syscall;
	ev->ev_flags |= p->ev_flags;
	__builtin_memcpy(ev->path, p->path, sizeof(ev->path));
	bpf_map_delete_elem(&secev_pending, &tid);
	stat_inc(SECEV_STAT_SENT);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

/* The syscall tracepoints' records: common fields, the syscall number,
 * then the arguments (enter) or the return value (exit). */
struct sys_enter_ctx {
	__u64 common;
	__s64 nr;
	__u64 args[6];
};

struct sys_exit_ctx {
	__u64 common;
	__s64 nr;
	__s64 ret;
};

#define AT_FDCWD -100

SEC("tracepoint/syscalls/sys_enter_open")
int loupe_secev_enter_open(struct sys_enter_ctx *ctx)
{
	return open_enter(SECEV_SYS_OPEN, AT_FDCWD, (const char *)ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int loupe_secev_enter_openat(struct sys_enter_ctx *ctx)
{
	return open_enter(SECEV_SYS_OPENAT, ctx->args[0], (const char *)ctx->args[1], ctx->args[2], ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int loupe_secev_enter_openat2(struct sys_enter_ctx *ctx)
{
	struct open_how how = {};
	bpf_probe_read_user(&how, sizeof(how), (void *)ctx->args[2]);
	return open_enter(SECEV_SYS_OPENAT2, ctx->args[0], (const char *)ctx->args[1], how.flags, how.mode);
}

SEC("tracepoint/syscalls/sys_exit_open")
int loupe_secev_exit_open(struct sys_exit_ctx *ctx) { return open_exit(ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_openat")
int loupe_secev_exit_openat(struct sys_exit_ctx *ctx) { return open_exit(ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_openat2")
int loupe_secev_exit_openat2(struct sys_exit_ctx *ctx) { return open_exit(ctx->ret); }

#include "secev_fileops.h"
