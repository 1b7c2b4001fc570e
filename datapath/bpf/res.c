//go:build ignore

/* loupe's per-pod resource observation: run-queue latency, on-CPU time,
 * block I/O latency, user page faults and OOM kills, per key, kept in the
 * kernel. A task's key is its network namespace inode or, for a task in
 * the node's own namespace (res_node_netns; a host-network pod's, the
 * node's), its cgroup v2 id with RES_KEY_CGROUP set: the agent maps both
 * to pods. User space reads res_keys at an interval and never gets a
 * per-switch event; only OOM kills (rare) are records.
 *
 *   loupe_res_switch      sched_switch (tp_btf): prev's on-CPU time since
 *                         its arrival; next's wait since it was queued, to
 *                         its key's run-queue histogram. Both times come
 *                         from the scheduler's own bookkeeping
 *                         (sched_info, stamped with the run queue's clock,
 *                         which __schedule updated just before): no
 *                         wake-up programs, no stamps of ours, no clock
 *                         read. The counts gather in one of the CPU's
 *                         res_cur slots, one per recent key, and go to
 *                         res_keys when a new key takes the slot or after
 *                         RES_FLUSH_NS. Cost per switch: a per-CPU array
 *                         lookup, the key's pointer chase, a compare of
 *                         RES_CUR_KEYS keys; a hash lookup only when a
 *                         CPU runs more pods than it has slots.
 *   loupe_res_io_start    block_io_start (tp_btf), in the submitter's
 *                         context: the request's key, by request.
 *   loupe_res_rq_insert   block_rq_insert / block_rq_issue (tp_btf): the
 *   loupe_res_rq_issue    request's start (the first of the two); a request
 *                         not seen at io_start is the current task's.
 *   loupe_res_rq_complete block_rq_complete (tp_btf): latency, op, bytes
 *                         to the submitter's key.
 *   loupe_res_fault       exceptions:page_fault_user (tp_btf): counted.
 *   loupe_res_oom         oom:mark_victim (tp_btf): counted, and one
 *                         record with the victim's memory to res_oom.
 *
 * Which agent reports a key is decided in Go (contract.ReportsNetns). */

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "res.h"

/* How long a CPU's switch counts may wait before they are added to
 * res_keys (they are added sooner when the CPU's key changes or it goes
 * idle): what a reader may see late. */
#define RES_FLUSH_NS 100000000ULL

/* Keys whose switch counts a CPU keeps before adding them to res_keys. */
#define RES_CUR_KEYS 4

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

/* The run queue's clock (rq_clock), reached through the task's CFS run
 * queue (set for tasks of every class, with CONFIG_FAIR_GROUP_SCHED). */
struct rq {
	__u64 clock;
} __attribute__((preserve_access_index));

struct cfs_rq {
	struct rq *rq;
} __attribute__((preserve_access_index));

struct sched_entity {
	struct cfs_rq *cfs_rq;
} __attribute__((preserve_access_index));

/* CONFIG_SCHED_INFO: last_queued is when the task was put on this run
 * queue (wake-up, new task, preemption; 0 once it runs), last_arrival when
 * it last got the CPU; both rq_clock. */
struct sched_info {
	__u64 last_arrival;
	__u64 last_queued;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	char comm[16];
	struct nsproxy *nsproxy;
	struct mm_struct *mm;
	struct css_set *cgroups;
	struct sched_entity se;
	struct sched_info sched_info;
} __attribute__((preserve_access_index));

struct request;

/* The mm's rss counter indexes (an anonymous enum of the kernel's, so
 * CO-RE cannot name it): the loader reads them from the running kernel's
 * BTF and sets them before load. */
volatile const __u32 res_mm_filepages = 0;
volatile const __u32 res_mm_anonpages = 0;
volatile const __u32 res_mm_shmempages = 0;

/* The node's own network namespace: its tasks are keyed by cgroup (0: by
 * network namespace only). */
volatile const __u64 res_node_netns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, RES_MAX_KEYS);
	__type(key, __u64); /* task_key */
	__type(value, struct res_stats);
} res_keys SEC(".maps");

/* What the switch program counted for one key, not yet added to res_keys. */
struct res_sched {
	__u64 cpu_ns;
	__u64 runq_count;
	__u64 runq_sum_ns;
	__u64 runq[RES_SLOTS];
};

/* Each CPU's current task (the one it switched to last), the pending slot
 * of its key, taken at its switch-in while it could still be read (a task
 * that exits switches out for the last time with no network namespace),
 * and the counts of the last RES_CUR_KEYS keys that ran on the CPU. A
 * slot's counts go to res_keys (a hash lookup and the histogram's adds)
 * only when the slot is taken by another key or every RES_FLUSH_NS: a CPU
 * switching among a few pods' tasks, as a request and its answer do, pays
 * no lookup per switch. The keys sit together, so that finding a key's
 * slot reads one cache line. Readers add the slots to res_keys (Snapshot). */
struct res_cur {
	__u64 task;
	__u32 slot; /* of task's key; RES_CUR_KEYS: none */
	__u32 evict; /* the slot a new key takes next */
	__u64 since; /* rq_clock of the last flush of every slot */
	__u64 keys[RES_CUR_KEYS]; /* 0: a free slot */
	struct res_sched pending[RES_CUR_KEYS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct res_cur);
} res_cur SEC(".maps");

struct res_rq {
	__u64 start_ns; /* 0 until insert or issue */
	__u64 key; /* the submitter's */
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

static __always_inline __u64 task_cgroup(struct task_struct *t)
{
	return t->cgroups->dfl_cgrp->kn->id;
}

/* task_key is what a task's counts go to: its network namespace, or in
 * the node's namespace its cgroup; 0 for an exiting task. */
static __always_inline __u64 task_key(struct task_struct *t)
{
	__u64 ino = task_netns(t);
	if (!res_node_netns || ino != res_node_netns)
		return ino;
	return task_cgroup(t) | RES_KEY_CGROUP;
}

/* stats returns this CPU's entry for a key, creating it. */
static __always_inline struct res_stats *stats(__u64 key)
{
	if (!key)
		return 0;
	struct res_stats *s = bpf_map_lookup_elem(&res_keys, &key);
	if (s)
		return s;
	bpf_map_update_elem(&res_keys, &key, &res_zero, BPF_NOEXIST);
	s = bpf_map_lookup_elem(&res_keys, &key);
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

/* flush adds a pending slot's counts to its key's entry. */
static __always_inline void flush(struct res_cur *cur, __u32 i)
{
	if (i >= RES_CUR_KEYS)
		return;
	struct res_sched *c = &cur->pending[i];
	if (!c->cpu_ns && !c->runq_count)
		return;
	struct res_stats *s = stats(cur->keys[i]);
	if (s) {
		s->cpu_ns += c->cpu_ns;
		s->runq_count += c->runq_count;
		s->runq_sum_ns += c->runq_sum_ns;
		for (int i = 0; i < RES_SLOTS; i++)
			s->runq[i] += c->runq[i];
	}
	__builtin_memset(c, 0, sizeof(*c));
}

/* pending_slot is key's slot on this CPU, taking one (and flushing what it
 * held) when the key has none. */
static __always_inline __u32 pending_slot(struct res_cur *c, __u64 key)
{
	for (__u32 i = 0; i < RES_CUR_KEYS; i++)
		if (c->keys[i] == key)
			return i;
	__u32 i = c->evict % RES_CUR_KEYS;
	c->evict = i + 1;
	flush(c, i);
	c->keys[i] = key;
	return i;
}

/* On this kernel __schedule updates rq_clock, picks next, fires
 * sched_switch, and only then charges the switch to sched_info (prev's
 * departure, next's arrival): here next's last_queued still holds when it
 * was queued and prev's last_arrival when it got the CPU. A task migrated
 * while queued was queued again on this CPU: its wait counts from then. */
SEC("tp_btf/sched_switch")
int BPF_PROG(loupe_res_switch, _Bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
{
	__u64 now = prev->se.cfs_rq->rq->clock;
	__u32 zero = 0;
	struct res_cur *cur = bpf_map_lookup_elem(&res_cur, &zero);
	if (!now || !cur)
		return 0;
	if (prev->pid) { /* pid 0: the idle task */
		__u64 arrived = prev->sched_info.last_arrival;
		__u64 ran = arrived && now > arrived ? now - arrived : 0;
		__u32 ps = cur->slot;
		if (cur->task == (__u64)prev) {
			if (ps < RES_CUR_KEYS)
				cur->pending[ps].cpu_ns += ran;
		} else { /* the first switch here since the programs were attached */
			struct res_stats *st = stats(task_key(prev));
			if (st)
				st->cpu_ns += ran;
		}
	}
	if (now - cur->since > RES_FLUSH_NS) {
		for (__u32 i = 0; i < RES_CUR_KEYS; i++)
			flush(cur, i);
		cur->since = now;
	}
	cur->task = (__u64)next;
	cur->slot = RES_CUR_KEYS;
	__u64 next_key = next->pid ? task_key(next) : 0;
	if (!next_key)
		return 0;
	__u32 i = pending_slot(cur, next_key);
	if (i >= RES_CUR_KEYS)
		return 0;
	cur->slot = i;
	__u64 queued = next->sched_info.last_queued;
	if (!queued)
		return 0;
	__u64 wait = now > queued ? now - queued : 0;
	struct res_sched *p = &cur->pending[i];
	p->runq_count++;
	p->runq_sum_ns += wait;
	p->runq[slot(wait)]++;
	return 0;
}

SEC("tp_btf/block_io_start")
int BPF_PROG(loupe_res_io_start, struct request *rq)
{
	__u64 key = (__u64)rq;
	struct res_rq v = {.key = task_key(bpf_get_current_task_btf())};
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
	struct res_rq n = {.start_ns = now, .key = task_key(bpf_get_current_task_btf())};
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
	struct res_stats *s = stats(v->key);
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
	struct res_stats *s = stats(task_key(bpf_get_current_task_btf()));
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
	struct res_stats *s = stats(task_key(task));
	if (s)
		s->ooms++;
	struct res_oom_event *ev = bpf_ringbuf_reserve(&res_oom, sizeof(*ev), 0);
	if (!ev) {
		count(RES_CNT_OOM_LOST);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->ts_ns = bpf_ktime_get_boot_ns();
	ev->netns_ino = task_netns(task);
	ev->cgroup_id = task_cgroup(task);
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
