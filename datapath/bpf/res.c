//go:build ignore

/* loupe's per-pod resource observation: run-queue latency, on-CPU time,
 * block I/O latency, user page faults and OOM kills, per network
 * namespace, kept in the kernel. User space reads res_netns at an interval
 * and never gets a per-switch event; only OOM kills (rare) are records.
 *
 *   loupe_res_wakeup      sched_wakeup, sched_wakeup_new (tp_btf): stamp
 *   loupe_res_wakeup_new  the task's wake-up in res_wake.
 *   loupe_res_switch      sched_switch (tp_btf): the CPU time of prev since
 *                         the CPU's last switch; a preempted prev is stamped
 *                         as waiting again; next's wait since its stamp
 *                         goes to its netns' run-queue histogram.
 *                         Cost per switch: one or two hash lookups (one
 *                         when prev and next share a netns), two task
 *                         storage lookups.
 *   loupe_res_io_start    block_io_start (tp_btf), in the submitter's
 *                         context: the request's netns, keyed by request.
 *   loupe_res_rq_insert   block_rq_insert / block_rq_issue (tp_btf): the
 *   loupe_res_rq_issue    request's start (the first of the two); a request
 *                         not seen at io_start is the current task's.
 *   loupe_res_rq_complete block_rq_complete (tp_btf): latency, op, bytes
 *                         to the submitter's netns.
 *   loupe_res_fault       exceptions:page_fault_user (tp_btf): counted.
 *   loupe_res_oom         oom:mark_victim (tp_btf): counted, and one
 *                         record with the victim's memory to res_oom.
 *
 * Which agent reports a netns is decided in Go (contract.ReportsNetns). */

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "res.h"

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

struct percpu_counter {
	__s64 count;
} __attribute__((preserve_access_index));

struct mm_struct {
	unsigned long total_vm;
	struct percpu_counter rss_stat[4];
} __attribute__((preserve_access_index));

struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	char comm[16];
	struct nsproxy *nsproxy;
	struct mm_struct *mm;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

struct request;

/* The mm's rss counter indexes (an anonymous enum of the kernel's, so
 * CO-RE cannot name it): the loader reads them from the running kernel's
 * BTF and sets them before load. */
volatile const __u32 res_mm_filepages = 0;
volatile const __u32 res_mm_anonpages = 0;
volatile const __u32 res_mm_shmempages = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, RES_MAX_NETNS);
	__type(key, __u64); /* netns inode */
	__type(value, struct res_stats);
} res_netns SEC(".maps");

/* A task's wake-up (or preemption) time, 0 once it runs. Task storage,
 * not a hash by tid: no lock, no allocation per wake-up, and freed with
 * the task. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} res_wake SEC(".maps");

/* Each CPU's last context switch. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} res_cpu SEC(".maps");

struct res_rq {
	__u64 start_ns; /* 0 until insert or issue */
	__u64 netns_ino;
	__u64 done; /* completed (in part): later parts add only bytes */
};

/* Block requests in flight, by request address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct res_rq);
} res_rqs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} res_oom SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, RES_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} res_counters SEC(".maps");

static const struct res_stats res_zero;

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&res_counters, &slot);
	if (v)
		*v += 1;
}

static __always_inline __u64 task_netns(struct task_struct *t)
{
	/* BTF pointers: a NULL nsproxy (an exiting task) reads as 0. */
	return t->nsproxy->net_ns->ns.inum;
}

/* stats returns this CPU's entry for a netns, creating it. */
static __always_inline struct res_stats *stats(__u64 ino)
{
	if (!ino)
		return 0;
	struct res_stats *s = bpf_map_lookup_elem(&res_netns, &ino);
	if (s)
		return s;
	bpf_map_update_elem(&res_netns, &ino, &res_zero, BPF_NOEXIST);
	s = bpf_map_lookup_elem(&res_netns, &ino);
	if (!s)
		count(RES_CNT_NS_FULL);
	return s;
}

static __always_inline __u32 slot(__u64 ns)
{
	__u32 r = 0;
	if (ns >> 32) { ns >>= 32; r += 32; }
	if (ns >> 16) { ns >>= 16; r += 16; }
	if (ns >> 8) { ns >>= 8; r += 8; }
	if (ns >> 4) { ns >>= 4; r += 4; }
	if (ns >> 2) { ns >>= 2; r += 2; }
	if (ns >> 1) { r += 1; }
	return r < RES_SLOTS ? r : RES_SLOTS - 1;
}

static __always_inline void stamp(struct task_struct *p, __u64 now)
{
	if (!p->pid)
		return; /* an idle task */
	__u64 *ts = bpf_task_storage_get(&res_wake, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (ts)
		*ts = now;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(loupe_res_wakeup, struct task_struct *p)
{
	stamp(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(loupe_res_wakeup_new, struct task_struct *p)
{
	stamp(p, bpf_ktime_get_ns());
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(loupe_res_switch, _Bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0;
	__u64 prev_ino = 0;
	struct res_stats *ps = 0;
	__u64 *last = bpf_map_lookup_elem(&res_cpu, &zero);
	if (last) {
		if (*last && prev->pid) { /* pid 0: the idle task */
			prev_ino = task_netns(prev);
			ps = stats(prev_ino);
			if (ps)
				ps->cpu_ns += now - *last;
		}
		*last = now;
	}
	/* Still runnable (TASK_RUNNING is 0): it waits in the queue again. */
	if (preempt || prev_state == 0)
		stamp(prev, now);

	if (!next->pid)
		return 0;
	__u64 *ts = bpf_task_storage_get(&res_wake, next, 0, 0);
	if (!ts || !*ts)
		return 0;
	__u64 wait = now > *ts ? now - *ts : 0;
	*ts = 0;
	/* Tasks of one pod often follow each other: one lookup for both. */
	__u64 next_ino = task_netns(next);
	struct res_stats *s = (ps && next_ino == prev_ino) ? ps : stats(next_ino);
	if (!s)
		return 0;
	s->runq_count++;
	s->runq_sum_ns += wait;
	s->runq[slot(wait)]++;
	return 0;
}

SEC("tp_btf/block_io_start")
int BPF_PROG(loupe_res_io_start, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct res_rq v = {.netns_ino = task_netns(bpf_get_current_task_btf())};
	bpf_map_update_elem(&res_rqs, &key, &v, BPF_ANY);
	return 0;
}

static __always_inline void rq_start(struct request *rq)
{
	__u64 key = (__u64)rq;
	__u64 now = bpf_ktime_get_ns();
	struct res_rq *v = bpf_map_lookup_elem(&res_rqs, &key);
	if (v && !v->done) {
		if (!v->start_ns)
			v->start_ns = now;
		return;
	}
	/* Not seen starting, or a finished request's address reused. */
	struct res_rq n = {.start_ns = now, .netns_ino = task_netns(bpf_get_current_task_btf())};
	bpf_map_update_elem(&res_rqs, &key, &n, BPF_ANY);
}

SEC("tp_btf/block_rq_insert")
int BPF_PROG(loupe_res_rq_insert, struct request *rq)
{
	rq_start(rq);
	return 0;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(loupe_res_rq_issue, struct request *rq)
{
	rq_start(rq);
	return 0;
}

/* A request completed in parts counts as one operation, with its latency,
 * at its first part; every part adds its bytes. The entry stays (marked
 * done) for the later parts until the request's address is reused or the
 * LRU evicts it. */
SEC("tp_btf/block_rq_complete")
int BPF_PROG(loupe_res_rq_complete, struct request *rq, int error, unsigned int nr_bytes)
{
	__u64 key = (__u64)rq;
	struct res_rq *v = bpf_map_lookup_elem(&res_rqs, &key);
	if (!v || !v->start_ns) {
		count(RES_CNT_RQ_MISSED);
		return 0;
	}
	struct res_stats *s = stats(v->netns_ino);
	if (!s)
		return 0;
	s->io_bytes += nr_bytes;
	if (v->done)
		return 0;
	v->done = 1;
	__u64 now = bpf_ktime_get_ns();
	__u64 lat = now > v->start_ns ? now - v->start_ns : 0;
	s->io_ops++;
	s->io_sum_ns += lat;
	s->io[slot(lat)]++;
	return 0;
}

SEC("tp_btf/page_fault_user")
int BPF_PROG(loupe_res_fault, unsigned long address, void *regs, unsigned long error_code)
{
	struct res_stats *s = stats(task_netns(bpf_get_current_task_btf()));
	if (s)
		s->faults++;
	return 0;
}

/* rss reads one of the mm's rss counters (the global part of the per-CPU
 * counter, as /proc shows it), by the kernel's own index. */
static __always_inline __u64 rss(struct mm_struct *mm, __u32 idx)
{
	if (idx >= 4)
		return 0;
	unsigned long addr = (unsigned long)mm + bpf_core_field_offset(struct mm_struct, rss_stat) +
			     idx * bpf_core_type_size(struct percpu_counter) +
			     bpf_core_field_offset(struct percpu_counter, count);
	__s64 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
	return v > 0 ? v : 0;
}

SEC("tp_btf/mark_victim")
int BPF_PROG(loupe_res_oom, struct task_struct *task, unsigned int uid)
{
	__u64 ino = task_netns(task);
	struct res_stats *s = stats(ino);
	if (s)
		s->ooms++;
	struct res_oom_event *ev = bpf_ringbuf_reserve(&res_oom, sizeof(*ev), 0);
	if (!ev) {
		count(RES_CNT_OOM_LOST);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_boot_ns();
	ev->netns_ino = ino;
	ev->cgroup_id = task->cgroups->dfl_cgrp->kn->id;
	ev->pid = task->tgid;
	ev->uid = uid;
	BPF_CORE_READ_STR_INTO(&ev->comm, task, comm);
	struct mm_struct *mm = task->mm;
	if (mm) {
		ev->total_vm = mm->total_vm;
		ev->anon_rss = rss(mm, res_mm_anonpages);
		ev->file_rss = rss(mm, res_mm_filepages);
		ev->shmem_rss = rss(mm, res_mm_shmempages);
	}
	bpf_ringbuf_submit(ev, 0);
	return 0;
}
