//go:build ignore

/* File operations for secev.c: renames, unlinks (and rmdirs) and chmods,
 * from their syscall tracepoints, enter and exit, as opens are:
 *
 *   loupe_secev_enter_{rename,renameat,renameat2}   SECEV_RENAME
 *   loupe_secev_enter_{unlink,unlinkat,rmdir}       SECEV_UNLINK
 *   loupe_secev_enter_{chmod,fchmod,fchmodat,fchmodat2}  SECEV_CHMOD
 *   loupe_secev_exit_fileop                         one program for every
 *                                                   matching sys_exit_*
 *
 * At enter the paths are read and made absolute (secev_path.h; fchmod's
 * is its fd's file), then filtered: a kind's config says none, all, or
 * those whose path (for a rename, either path) is under a prefix of
 * secev_fileop_prefixes that carries the kind's bit. A path that is not
 * canonical passes (user space cleans it), and one that could not be
 * resolved passes only when SECEV_CFG_RELATIVE is set. What passes waits
 * per thread for the exit, which writes one record with the result.
 *
 * Writes are opens for writing (SECEV_OPEN, its flags), as in Falco's
 * rules: a write(2) names an fd, not a path. */
#pragma once

/* Per-kind path prefixes; the value is the SECEV_K_* bits of the prefix
 * and of every shorter prefix of it in the set (the agent computes it),
 * so the longest match alone answers. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__type(key, struct secev_lpm_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} secev_fileop_prefixes SEC(".maps");

/* A file operation between its enter and its exit, per thread. */
struct secev_fpending {
	__u32 type;
	__u32 flags;
	__u32 mode;
	__s32 dirfd;
	__s32 dirfd2;
	__u16 syscall;
	__u16 ev_flags;
	char path[SECEV_PATH_MAX];
	char path2[SECEV_PATH_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct secev_fpending);
} secev_fileop_pending SEC(".maps");

struct secev_fscratch {
	struct secev_fpending p;
	struct secev_lpm_key k;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct secev_fscratch);
} secev_fscratch SEC(".maps");

/* fileop_read reads a user path into dst and makes it absolute against
 * dirfd; upath NULL means dirfd's own file (fchmod). It returns the
 * ev_flags of the path (rel, trunc, res: which bits to use), or -1 when
 * the path cannot be read (the syscall fails with EFAULT). */
static __always_inline int fileop_read(char *dst, const char *upath, __s32 dirfd, __u16 rel, __u16 trunc, __u16 res)
{
	__u16 f = 0;
	if (upath) {
		long n = bpf_probe_read_user_str(dst, SECEV_PATH_MAX, upath);
		if (n <= 0)
			return -1;
		if (n == SECEV_PATH_MAX)
			f |= trunc;
	} else {
		dst[0] = 0;
	}
	if (dst[0] != '/') {
		__u16 r = secev_resolve(dst, dirfd);
		if (r & SECEV_F_RELATIVE)
			f |= rel;
		if (r & SECEV_F_RESOLVED)
			f |= res;
		if (r & SECEV_F_PATH_TRUNC)
			f |= trunc;
	}
	return f;
}

/* fileop_pass applies a kind's prefix filter to one path. */
static __always_inline int fileop_pass(struct secev_lpm_key *k, const char *path, int unresolved, __u8 kbit)
{
	if (unresolved)
		return config(SECEV_CFG_RELATIVE);
	if (secev_lpm_fill(k, path))
		return 0;
	__u8 *v = bpf_map_lookup_elem(&secev_fileop_prefixes, k);
	if (v && (*v & kbit))
		return 1;
	return secev_noncanonical(path);
}

static __always_inline struct secev_fscratch *fscratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&secev_fscratch, &zero);
}

/* fileop_enter filters a read operation and keeps it for the exit. */
static __always_inline int fileop_enter(struct secev_fscratch *s, __u32 cfg_slot, __u8 kbit)
{
	__u32 cfg = config(cfg_slot);
	if (cfg == 2) {
		int pass = fileop_pass(&s->k, s->p.path, s->p.ev_flags & SECEV_F_RELATIVE, kbit);
		if (!pass && s->p.type == SECEV_RENAME)
			pass = fileop_pass(&s->k, s->p.path2, s->p.ev_flags & SECEV_F_PATH2_RELATIVE, kbit);
		if (!pass)
			cfg = 0;
	}
	if (!cfg) {
		stat_inc(SECEV_STAT_FILTERED);
		return 0;
	}
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_update_elem(&secev_fileop_pending, &tid, &s->p, BPF_ANY);
	return 0;
}

/* fileop_start reads the (first) path of an operation into the scratch
 * entry; NULL when the kind is off or the path cannot be read. */
static __always_inline struct secev_fscratch *fileop_start(__u32 type, __u16 sys, __u32 cfg_slot, __s32 dirfd,
							   const char *upath, __u32 flags, __u32 mode)
{
	if (!config(cfg_slot)) {
		stat_inc(SECEV_STAT_FILTERED);
		return 0;
	}
	struct secev_fscratch *s = fscratch();
	if (!s)
		return 0;
	int f = fileop_read(s->p.path, upath, dirfd, SECEV_F_RELATIVE, SECEV_F_PATH_TRUNC, SECEV_F_RESOLVED);
	if (f < 0)
		return 0;
	s->p.type = type;
	s->p.syscall = sys;
	s->p.ev_flags = f;
	s->p.flags = flags;
	s->p.mode = mode;
	s->p.dirfd = dirfd;
	s->p.dirfd2 = 0;
	s->p.path2[0] = 0;
	return s;
}

static __always_inline int rename_enter(__u16 sys, __s32 olddfd, const char *oldp, __s32 newdfd, const char *newp, __u32 flags)
{
	struct secev_fscratch *s = fileop_start(SECEV_RENAME, sys, SECEV_CFG_RENAME, olddfd, oldp, flags, 0);
	if (!s)
		return 0;
	int f = fileop_read(s->p.path2, newp, newdfd, SECEV_F_PATH2_RELATIVE, SECEV_F_PATH2_TRUNC, SECEV_F_PATH2_RESOLVED);
	if (f < 0)
		return 0;
	s->p.ev_flags |= f;
	s->p.dirfd2 = newdfd;
	return fileop_enter(s, SECEV_CFG_RENAME, SECEV_K_RENAME);
}

static __always_inline int unlink_enter(__u16 sys, __s32 dfd, const char *p, __u32 flags)
{
	struct secev_fscratch *s = fileop_start(SECEV_UNLINK, sys, SECEV_CFG_UNLINK, dfd, p, flags, 0);
	return s ? fileop_enter(s, SECEV_CFG_UNLINK, SECEV_K_UNLINK) : 0;
}

static __always_inline int chmod_enter(__u16 sys, __s32 dfd, const char *p, __u32 mode, __u32 flags)
{
	struct secev_fscratch *s = fileop_start(SECEV_CHMOD, sys, SECEV_CFG_CHMOD, dfd, p, flags, mode);
	return s ? fileop_enter(s, SECEV_CFG_CHMOD, SECEV_K_CHMOD) : 0;
}

SEC("tracepoint/syscalls/sys_enter_rename")
int loupe_secev_enter_rename(struct sys_enter_ctx *ctx)
{
	return rename_enter(SECEV_SYS_RENAME, SECEV_AT_FDCWD, (const char *)ctx->args[0], SECEV_AT_FDCWD,
			    (const char *)ctx->args[1], 0);
}

SEC("tracepoint/syscalls/sys_enter_renameat")
int loupe_secev_enter_renameat(struct sys_enter_ctx *ctx)
{
	return rename_enter(SECEV_SYS_RENAMEAT, ctx->args[0], (const char *)ctx->args[1], ctx->args[2],
			    (const char *)ctx->args[3], 0);
}

SEC("tracepoint/syscalls/sys_enter_renameat2")
int loupe_secev_enter_renameat2(struct sys_enter_ctx *ctx)
{
	return rename_enter(SECEV_SYS_RENAMEAT2, ctx->args[0], (const char *)ctx->args[1], ctx->args[2],
			    (const char *)ctx->args[3], ctx->args[4]);
}

SEC("tracepoint/syscalls/sys_enter_unlink")
int loupe_secev_enter_unlink(struct sys_enter_ctx *ctx)
{
	return unlink_enter(SECEV_SYS_UNLINK, SECEV_AT_FDCWD, (const char *)ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_enter_unlinkat")
int loupe_secev_enter_unlinkat(struct sys_enter_ctx *ctx)
{
	return unlink_enter(SECEV_SYS_UNLINKAT, ctx->args[0], (const char *)ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_rmdir")
int loupe_secev_enter_rmdir(struct sys_enter_ctx *ctx)
{
	return unlink_enter(SECEV_SYS_RMDIR, SECEV_AT_FDCWD, (const char *)ctx->args[0], 0);
}

SEC("tracepoint/syscalls/sys_enter_chmod")
int loupe_secev_enter_chmod(struct sys_enter_ctx *ctx)
{
	return chmod_enter(SECEV_SYS_CHMOD, SECEV_AT_FDCWD, (const char *)ctx->args[0], ctx->args[1], 0);
}

SEC("tracepoint/syscalls/sys_enter_fchmod")
int loupe_secev_enter_fchmod(struct sys_enter_ctx *ctx)
{
	return chmod_enter(SECEV_SYS_FCHMOD, ctx->args[0], 0, ctx->args[1], 0);
}

SEC("tracepoint/syscalls/sys_enter_fchmodat")
int loupe_secev_enter_fchmodat(struct sys_enter_ctx *ctx)
{
	return chmod_enter(SECEV_SYS_FCHMODAT, ctx->args[0], (const char *)ctx->args[1], ctx->args[2], 0);
}

SEC("tracepoint/syscalls/sys_enter_fchmodat2")
int loupe_secev_enter_fchmodat2(struct sys_enter_ctx *ctx)
{
	return chmod_enter(SECEV_SYS_FCHMODAT2, ctx->args[0], (const char *)ctx->args[1], ctx->args[2], ctx->args[3]);
}

/* One exit program for every file operation: the pending entry says
 * which it was. */
SEC("tracepoint/syscalls/sys_exit_fileop")
int loupe_secev_exit_fileop(struct sys_exit_ctx *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct secev_fpending *p = bpf_map_lookup_elem(&secev_fileop_pending, &tid);
	if (!p)
		return 0;
	__u64 now = bpf_ktime_get_boot_ns();
	struct secev_event *ev = reserve(now);
	if (!ev) {
		bpf_map_delete_elem(&secev_fileop_pending, &tid);
		return 0;
	}
	secev_zero(ev);
	fill_task(ev, p->type, now);
	fill_argv(ev);
	ev->ret = ctx->ret;
	ev->flags = p->flags;
	ev->mode = p->mode;
	ev->dirfd = p->dirfd;
	ev->dirfd2 = p->dirfd2;
	ev->syscall = p->syscall;
	ev->ev_flags |= p->ev_flags;
	__builtin_memcpy(ev->path, p->path, sizeof(ev->path));
	__builtin_memcpy(ev->path2, p->path2, sizeof(ev->path2));
	bpf_map_delete_elem(&secev_fileop_pending, &tid);
	stat_inc(SECEV_STAT_SENT);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}
