//go:build ignore

/* Per-pod resource observation: the layouts res.c writes and
 * datapath/res.go reads (TestResHeaderMatches and TestResLayoutMatchesBTF
 * hold the two together). */
#pragma once

/* Log2 latency histograms in nanoseconds: slot i counts [2^i, 2^(i+1)) ns
 * (slot 0 also counts 0 ns); the last slot also counts everything above. */
#define RES_SLOTS 40

/* res_keys map: one entry per key (network namespace, or cgroup in the
 * node's namespace). */
#define RES_MAX_KEYS 4096

/* Set in a key that is a cgroup id, not a network namespace inode
 * (inodes are 32 bits; cgroup ids do not reach bit 63). */
#define RES_KEY_CGROUP 0x8000000000000000

/* res_counters slots */
#define RES_CNT_OOM_LOST 0  /* OOM records lost: the ring was full */
#define RES_CNT_NS_FULL 1   /* updates lost: no room for a new key */
#define RES_CNT_RQ_MISSED 2 /* block completions of requests never seen starting */
#define RES_CNT_MAX 3

/* What one CPU counted for one key. */
struct res_stats {
	__u64 cpu_ns;      /* on-CPU time of the key's tasks */
	__u64 runq_count;  /* wake-ups (and preemptions) that ended in a switch-in */
	__u64 runq_sum_ns; /* their summed run-queue wait */
	__u64 io_ops;      /* block requests completed */
	__u64 io_bytes;    /* their bytes */
	__u64 io_sum_ns;   /* their summed insert/issue-to-complete time */
	__u64 faults;      /* user page faults */
	__u64 ooms;        /* OOM kills of the key's tasks */
	__u64 runq[RES_SLOTS];
	__u64 io[RES_SLOTS];
};

/* One OOM kill, written to res_oom. */
struct res_oom_event {
	__u64 ts_ns;     /* CLOCK_BOOTTIME */
	__u64 netns_ino; /* the victim's network namespace */
	__u64 cgroup_id; /* the victim's cgroup v2 id */
	__u64 total_vm;  /* pages */
	__u64 anon_rss;  /* pages */
	__u64 file_rss;  /* pages */
	__u64 shmem_rss; /* pages */
	__u32 pid;       /* the victim's tgid */
	__u32 uid;
	char comm[16];
};

_Static_assert(sizeof(struct res_oom_event) == 80, "res_oom_event layout changed: update datapath/res.go");

/* Keep both structs in the object's BTF, for TestResLayoutMatchesBTF. */
static struct res_oom_event *res_oom_event_btf __attribute__((used));
static struct res_stats *res_stats_btf __attribute__((used));
