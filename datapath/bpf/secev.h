//go:build ignore

/* Runtime security records: the layout of struct secev_event that
 * secev.c writes and datapath/secev.go decodes (TestSecevLayoutMatchesBTF
 * holds the two together). */
#pragma once

#define SECEV_PATH_MAX 256 /* bytes of a path, NUL included */
#define SECEV_ARGV_MAX 512 /* bytes of argv, NULs between arguments */
#define SECEV_LPM_BYTES 128 /* bytes of a path the prefix filter compares */
#define SECEV_NAME_MAX 16  /* bytes of an exec name in the name filter */

/* secev_event.type */
#define SECEV_EXEC 1
#define SECEV_EXIT 2
#define SECEV_OPEN 3

/* secev_event.syscall, for SECEV_OPEN */
#define SECEV_SYS_OPEN 0
#define SECEV_SYS_OPENAT 1
#define SECEV_SYS_OPENAT2 2

/* secev_event.type, file operations (secev_fileops.h) */
#define SECEV_RENAME 4
#define SECEV_UNLINK 5
#define SECEV_CHMOD 6

/* secev_event.syscall, for SECEV_RENAME, SECEV_UNLINK and SECEV_CHMOD */
#define SECEV_SYS_RENAME 3
#define SECEV_SYS_RENAMEAT 4
#define SECEV_SYS_RENAMEAT2 5
#define SECEV_SYS_UNLINK 6
#define SECEV_SYS_UNLINKAT 7
#define SECEV_SYS_RMDIR 8
#define SECEV_SYS_CHMOD 9
#define SECEV_SYS_FCHMOD 10
#define SECEV_SYS_FCHMODAT 11
#define SECEV_SYS_FCHMODAT2 12

/* secev_event.ev_flags */
#define SECEV_F_RELATIVE 0x1  /* path is relative to dirfd / the cwd, not resolved */
#define SECEV_F_PATH_TRUNC 0x2
#define SECEV_F_ARGV_TRUNC 0x4
#define SECEV_F_RESOLVED 0x8        /* path was relative: made absolute against dirfd / the cwd */
#define SECEV_F_PATH2_RELATIVE 0x10 /* the same three, for path2 */
#define SECEV_F_PATH2_TRUNC 0x20
#define SECEV_F_PATH2_RESOLVED 0x40

/* secev_config slots */
#define SECEV_CFG_EXEC 0     /* 0 none, 1 every exec, 2 execs whose name is in secev_exec_names */
#define SECEV_CFG_OPEN 1     /* 0 none, 1 every open, 2 opens under a secev_prefixes prefix */
#define SECEV_CFG_EXIT 2     /* 1: report exits of processes */
#define SECEV_CFG_RELATIVE 3 /* 1: report opens of relative paths when CFG_OPEN is 2 */
#define SECEV_CFG_RENAME 4   /* 0 none, 1 every rename, 2 renames from or to a secev_fileop_prefixes prefix of this kind */
#define SECEV_CFG_UNLINK 5   /* the same, for unlinks and rmdirs */
#define SECEV_CFG_CHMOD 6    /* the same, for chmods */
#define SECEV_CFG_MAX 7

/* secev_fileop_prefixes values: the kinds a prefix (or a shorter prefix
 * of it) is watched for */
#define SECEV_K_RENAME 0x1
#define SECEV_K_UNLINK 0x2
#define SECEV_K_CHMOD 0x4

/* secev_stats slots */
#define SECEV_STAT_SENT 0     /* records written to the ring */
#define SECEV_STAT_FILTERED 1 /* events the in-kernel filter kept in the kernel */
#define SECEV_STAT_LIMITED 2  /* records the rate limit held back */
#define SECEV_STAT_FULL 3     /* records lost: the ring was full */
#define SECEV_STAT_MAX 4

struct secev_event {
	__u64 ts_ns;     /* CLOCK_BOOTTIME */
	__u64 netns_ino; /* the task's network namespace */
	__u64 cgroup_id; /* the task's cgroup v2 id */
	__u32 type;
	__u32 pid;  /* tgid */
	__u32 tid;
	__u32 ppid; /* real parent's tgid */
	__u32 uid;
	__u32 gid;
	__s32 ret;   /* open: fd or -errno; other file ops: 0 or -errno; exit: exit code */
	__u32 flags; /* open flags; unlinkat and renameat2 flags */
	__u32 mode;  /* open: mode; chmod: the new mode */
	__u16 syscall;
	__u16 ev_flags;
	__u32 argv_len;
	__s32 dirfd; /* fchmod: the fd */
	char comm[16];
	char pcomm[16];
	char path[SECEV_PATH_MAX]; /* exec: the file executed; open, unlink, chmod: the path; rename: the old path */
	char argv[SECEV_ARGV_MAX];
	/* Appended for file operations. */
	char path2[SECEV_PATH_MAX]; /* rename: the new path (path is the old) */
	__s32 dirfd2;               /* rename: the new path's dirfd */
	__u32 pad2;
};

_Static_assert(sizeof(struct secev_event) == 1136, "secev_event layout changed: update datapath/secev.go");

/* Keeps struct secev_event in the object's BTF, for TestSecevLayoutMatchesBTF. */
static struct secev_event *secev_event_btf __attribute__((used));
