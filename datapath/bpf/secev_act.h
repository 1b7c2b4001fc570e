//go:build ignore

/* Rule actions of the runtime-security tracepoints (secev.c): `action: kill`
 * sends SIGKILL to the task at the event, from the tracepoint itself, with
 * bpf_send_signal (no LSM needed).
 *
 * Each kill rule owns one bit of a __u64 (up to 64 kill rules). The agent
 * compiles a rule into kernel data that decides it exactly:
 *   secev_kill_paths  LPM trie of path bytes -> rules; an exact path is
 *                     keyed with its NUL, so it matches only itself; a
 *                     prefix without. Each entry's value already holds the
 *                     rules of every shorter entry that is its prefix.
 *   secev_kill_execs  executable name (comm, 15 bytes) -> rules.
 *   secev_kill_netns  netns inode of a pod the rule selects -> rules; the
 *                     agent keeps it in step with its pods. Nothing else
 *                     (the node, unselected pods) is ever killed.
 *   secev_kill_cfg    [0] rules that need an open for reading, [1] for
 *                     writing.
 * A kill is counted in secev_kill_stats and marked SECEV_F_KILLED on the
 * event's record. */
#pragma once

#define SECEV_F_KILLED 0x4000 /* the task was sent SIGKILL by a kill rule */
#define SECEV_SIGKILL 9
#define SECEV_O_ACCMODE 3
#define SECEV_O_RDONLY 0
#define SECEV_O_WRONLY 1

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1024);
	__type(key, struct secev_lpm_key);
	__type(value, __u64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} secev_kill_paths SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct secev_name);
	__type(value, __u64);
} secev_kill_execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} secev_kill_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} secev_kill_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} secev_kill_stats SEC(".maps");

/* act_netns_rules: the kill rules that select the current task's pod. */
static __always_inline __u64 act_netns_rules(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();
	__u64 ino = BPF_CORE_READ(t, nsproxy, net_ns, ns.inum);
	__u64 *m = bpf_map_lookup_elem(&secev_kill_netns, &ino);
	return m ? *m : 0;
}

static __always_inline __u64 act_cfg(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&secev_kill_cfg, &slot);
	return v ? *v : 0;
}

static __always_inline int act_kill(__u64 rules)
{
	if (!rules)
		return 0;
	bpf_send_signal(SECEV_SIGKILL);
	__u32 zero = 0;
	__u64 *v = bpf_map_lookup_elem(&secev_kill_stats, &zero);
	if (v)
		*v += 1;
	return 1;
}

/* secev_act_open kills the task if a kill rule selecting its pod matches
 * the open of path (n bytes with the NUL, as bpf_probe_read_user_str
 * returned) with these flags. k is scratch. Returns 1 if it did. */
static __always_inline int secev_act_open(struct secev_lpm_key *k, const char *path, long n, __u32 flags)
{
	if (n <= 0 || path[0] != '/')
		return 0; /* relative paths are not resolved: never killed on a guess */
	__u64 rules = act_netns_rules();
	if (!rules)
		return 0;
	/* The key holds the NUL when it fits, so exact entries match only
	 * the path itself; the bytes after it take no part. */
	k->prefixlen = SECEV_LPM_BYTES * 8;
	if (n <= SECEV_LPM_BYTES)
		k->prefixlen = n * 8;
	__builtin_memcpy(k->path, path, SECEV_LPM_BYTES);
	__u64 *m = bpf_map_lookup_elem(&secev_kill_paths, k);
	if (!m)
		return 0;
	rules &= *m;
	__u32 acc = flags & SECEV_O_ACCMODE;
	if (acc == SECEV_O_WRONLY)
		rules &= ~act_cfg(0);
	if (acc == SECEV_O_RDONLY)
		rules &= ~act_cfg(1);
	return act_kill(rules);
}

/* secev_act_exec kills the task at exec, before the new program's first
 * instruction, if a kill rule selecting its pod names the program. */
static __always_inline int secev_act_exec(void)
{
	__u64 rules = act_netns_rules();
	if (!rules)
		return 0;
	struct secev_name n = {};
	bpf_get_current_comm(n.name, sizeof(n.name));
	__u64 *m = bpf_map_lookup_elem(&secev_kill_execs, &n);
	if (!m)
		return 0;
	return act_kill(rules & *m);
}
