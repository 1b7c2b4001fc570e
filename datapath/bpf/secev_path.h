//go:build ignore

/* Relative paths made absolute in the kernel, for secev.c: the directory
 * a path is relative to (the cwd, or a dirfd's file) is walked up its
 * dentries to the task's root, crossing mount points, and the relative
 * path is appended. bpf_d_path is not allowed in tracepoint programs, so
 * the walk is done by hand, with CO-RE reads:
 *
 *   names   SECEV_WALK_MAX dentries at most (deeper: not resolved);
 *   mounts  at a mount's root the walk goes on from its mount point in the
 *           parent mount, until the task's root (a container's own root
 *           in a container, as the process sees it) or the top mount;
 *   ./ ../  leading ones are taken off and each ../ skips one dentry of
 *           the walk; any left inside the path stay, and the path is
 *           reported as non-canonical (secev_noncanonical) so that the
 *           prefix filter passes it and user space cleans it.
 *
 * Cost: only relative paths pay it, about two reads per dentry. A path
 * that cannot be resolved is kept as given and marked SECEV_F_RELATIVE:
 * never guessed. */
#pragma once

#define SECEV_WALK_MAX 64 /* dentries (and mount crossings) walked; a power of 2 */
#define SECEV_DOTS_MAX 8  /* leading ./ and ../ taken off */

struct qstr {
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
} __attribute__((preserve_access_index));

struct vfsmount {
	struct dentry *mnt_root;
} __attribute__((preserve_access_index));

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
} __attribute__((preserve_access_index));

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
} __attribute__((preserve_access_index));

struct fs_struct {
	struct path root;
	struct path pwd;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

/* The task fields this file reads (a CO-RE flavour of task_struct). */
struct task_struct___secpath {
	struct fs_struct *fs;
	struct files_struct *files;
} __attribute__((preserve_access_index));

struct secev_walk {
	char buf[2 * SECEV_PATH_MAX]; /* writes start below SECEV_PATH_MAX */
	char rel[SECEV_PATH_MAX];
	__u64 names[SECEV_WALK_MAX]; /* const unsigned char *, as numbers for bpf2go */
	/* The walk's state, kept here rather than on the stack: the verifier
	 * does not track map values, so bpf_loop's step converges at once. */
	__u64 d, m, root_d, root_m; /* dentry and vfsmount pointers */
	__u32 up, depth, done, off, trunc, pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct secev_walk);
} secev_walk SEC(".maps");

#define SECEV_AT_FDCWD -100

/* dir_of finds the directory a path is relative to: the cwd, or the file
 * open at fd. */
static __always_inline int dir_of(__s32 fd, struct path *out)
{
	struct task_struct___secpath *t = (void *)bpf_get_current_task();
	if (fd == SECEV_AT_FDCWD) {
		out->mnt = BPF_CORE_READ(t, fs, pwd.mnt);
		out->dentry = BPF_CORE_READ(t, fs, pwd.dentry);
		return out->dentry ? 0 : -1;
	}
	if (fd < 0)
		return -1;
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	if (!fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return -1;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return -1;
	out->mnt = BPF_CORE_READ(f, f_path.mnt);
	out->dentry = BPF_CORE_READ(f, f_path.dentry);
	return out->dentry ? 0 : -1;
}

struct walk_ctx {
	struct secev_walk *w;
};

/* walk_step moves one dentry (or one mount) up towards the root. */
static long walk_step(__u64 i, void *arg)
{
	struct secev_walk *w = ((struct walk_ctx *)arg)->w;
	struct dentry *d = (void *)w->d;
	struct vfsmount *m = (void *)w->m;
	if (w->d == w->root_d && w->m == w->root_m) {
		w->done = 1;
		return 1;
	}
	if (d == BPF_CORE_READ(m, mnt_root)) {
		struct mount *mnt = (void *)((char *)m - bpf_core_field_offset(struct mount, mnt));
		struct mount *parent = BPF_CORE_READ(mnt, mnt_parent);
		if (parent == mnt) {
			w->done = 1; /* the top of the mount tree */
			return 1;
		}
		w->d = (__u64)BPF_CORE_READ(mnt, mnt_mountpoint);
		w->m = (__u64)&parent->mnt;
		return 0;
	}
	struct dentry *pd = BPF_CORE_READ(d, d_parent);
	if (pd == d) {
		w->done = 1;
		return 1;
	}
	if (w->up > 0) {
		w->up--;
	} else if (w->depth < SECEV_WALK_MAX) {
		w->names[w->depth & (SECEV_WALK_MAX - 1)] = (__u64)BPF_CORE_READ(d, d_name.name);
		w->depth++;
	}
	w->d = (__u64)pd;
	return 0;
}

/* write_step appends "/name" of the i-th dentry from the top. */
static long write_step(__u64 i, void *arg)
{
	struct secev_walk *w = ((struct walk_ctx *)arg)->w;
	__u32 off = w->off;
	if (off >= SECEV_PATH_MAX - 1) {
		w->trunc = SECEV_F_PATH_TRUNC;
		return 1;
	}
	__u32 at = w->depth - 1 - (__u32)i;
	w->buf[off & (SECEV_PATH_MAX - 1)] = '/';
	off++;
	long n = bpf_probe_read_kernel_str(&w->buf[off & (SECEV_PATH_MAX - 1)], SECEV_PATH_MAX,
					   (const void *)w->names[at & (SECEV_WALK_MAX - 1)]);
	if (n > 0)
		off += n - 1;
	w->off = off;
	return 0;
}

/* secev_resolve makes path (NUL-terminated, in a SECEV_PATH_MAX buffer)
 * absolute against dirfd (SECEV_AT_FDCWD: the cwd). An empty path names
 * dirfd's file itself (fchmod). It returns the ev_flags to add:
 * SECEV_F_RESOLVED, with SECEV_F_PATH_TRUNC when the result was cut;
 * SECEV_F_RELATIVE, path unchanged, when it could not be resolved. */
static __always_inline __u16 secev_resolve(char *path, __s32 dirfd)
{
	__u32 zero = 0;
	struct secev_walk *w = bpf_map_lookup_elem(&secev_walk, &zero);
	if (!w)
		return SECEV_F_RELATIVE;
	struct path at = {};
	if (dir_of(dirfd, &at))
		return SECEV_F_RELATIVE;
	struct task_struct___secpath *t = (void *)bpf_get_current_task();

	/* Leading ./ and ../ off the relative part. */
	__builtin_memcpy(w->rel, path, SECEV_PATH_MAX);
	__u32 pos = 0, up = 0;
	for (int i = 0; i < SECEV_DOTS_MAX; i++) {
		char c0 = w->rel[pos & (SECEV_PATH_MAX - 1)];
		char c1 = w->rel[(pos + 1) & (SECEV_PATH_MAX - 1)];
		char c2 = w->rel[(pos + 2) & (SECEV_PATH_MAX - 1)];
		if (c0 != '.')
			break;
		if (c1 == '/') {
			pos += 2;
		} else if (c1 == 0) {
			pos += 1;
			break;
		} else if (c1 == '.' && (c2 == '/' || c2 == 0)) {
			pos += c2 ? 3 : 2;
			up++;
			if (!c2)
				break;
		} else {
			break;
		}
		if (pos >= SECEV_PATH_MAX - 3)
			break;
	}

	/* Walk up to the root, keeping the names (the first `up` skipped).
	 * bpf_loop: the verifier checks one step, not every path through
	 * SECEV_WALK_MAX of them. */
	struct walk_ctx c = {.w = w};
	w->d = (__u64)at.dentry;
	w->m = (__u64)at.mnt;
	w->root_d = (__u64)BPF_CORE_READ(t, fs, root.dentry);
	w->root_m = (__u64)BPF_CORE_READ(t, fs, root.mnt);
	w->up = up;
	w->depth = 0;
	w->done = 0;
	w->off = 0;
	w->trunc = 0;
	bpf_loop(SECEV_WALK_MAX, walk_step, &c, 0);
	if (!w->done)
		return SECEV_F_RELATIVE;

	/* Write "/name/name.../rel" forward. */
	bpf_loop(w->depth & (SECEV_WALK_MAX * 2 - 1), write_step, &c, 0);
	__u16 flags = SECEV_F_RESOLVED | (w->trunc ? SECEV_F_PATH_TRUNC : 0);
	__u32 off = w->off;
	int has_rel = w->rel[pos & (SECEV_PATH_MAX - 1)] != 0;
	if (off < SECEV_PATH_MAX - 1 && (has_rel || off == 0)) {
		w->buf[off & (SECEV_PATH_MAX - 1)] = '/';
		off++;
	}
	if (has_rel && off < SECEV_PATH_MAX - 1) {
		long n = bpf_probe_read_kernel_str(&w->buf[off & (SECEV_PATH_MAX - 1)], SECEV_PATH_MAX,
						   &w->rel[pos & (SECEV_PATH_MAX - 1)]);
		if (n > 0)
			off += n - 1;
	} else if (has_rel) {
		flags |= SECEV_F_PATH_TRUNC;
	}
	if (off >= SECEV_PATH_MAX) {
		off = SECEV_PATH_MAX - 1;
		flags |= SECEV_F_PATH_TRUNC;
	}
	w->buf[off & (SECEV_PATH_MAX - 1)] = 0;
	__builtin_memcpy(path, w->buf, SECEV_PATH_MAX);
	path[SECEV_PATH_MAX - 1] = 0;
	return flags;
}

/* secev_noncanonical says whether an absolute path has "//", "/./" or
 * "/../" in it (or ends in "/." or "/.."): its bytes do not start with
 * the prefix of the file it names, so the prefix filter must pass it and
 * leave the decision to user space, which cleans it. */
static __always_inline int secev_noncanonical(const char *p)
{
	for (int i = 0; i < SECEV_PATH_MAX - 3; i++) {
		char c = p[i];
		if (c == 0)
			return 0;
		if (c != '/')
			continue;
		char c1 = p[i + 1], c2 = p[i + 2], c3 = p[i + 3];
		if (c1 == '/')
			return 1;
		if (c1 == '.' && (c2 == '/' || c2 == 0 || (c2 == '.' && (c3 == '/' || c3 == 0))))
			return 1;
	}
	return 0;
}

/* secev_lpm_fill makes the trie key of a path: its first SECEV_LPM_BYTES
 * bytes, the length without the NUL. */
static __always_inline int secev_lpm_fill(struct secev_lpm_key *k, const char *path)
{
	long n = bpf_probe_read_kernel_str(k->path, SECEV_LPM_BYTES, path);
	if (n <= 0)
		return -1;
	if (n == SECEV_LPM_BYTES) {
		/* Maybe longer: compare every byte the trie holds. */
		__builtin_memcpy(k->path, path, SECEV_LPM_BYTES);
		k->prefixlen = SECEV_LPM_BYTES * 8;
	} else {
		k->prefixlen = (n - 1) * 8;
	}
	return 0;
}
