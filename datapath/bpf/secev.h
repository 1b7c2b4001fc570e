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

/* secev_event.ev_flags */
#define SECEV_F_RELATIVE 0x1  /* path is relative to dirfd / the cwd, not resolved */
#define SECEV_F_PATH_TRUNC 0x2
#define SECEV_F_ARGV_TRUNC 0x4

/* secev_config slots */
#define SECEV_CFG_EXEC 0     /* 0 none, 1 every exec, 2 execs whose name is in secev_exec_names */
#define SECEV_CFG_OPEN 1     /* 0 none, 1 every open, 2 opens under a secev_prefixes prefix */
#define SECEV_CFG_EXIT 2     /* 1: report exits of processes */
#define SECEV_CFG_RELATIVE 3 /* 1: report opens of relative paths when CFG_OPEN is 2 */
#define SECEV_CFG_MAX 4

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
	__s32 ret;   /* open: fd or -errno; exit: exit code */
	__u32 flags; /* open flags */
	__u32 mode;
	__u16 syscall;
	__u16 ev_flags;
	__u32 argv_len;
	__s32 dirfd;
	char comm[16];
	char pcomm[16];
	char path[SECEV_PATH_MAX]; /* exec: the file executed; open: the path */
	char argv[SECEV_ARGV_MAX];
};

_Static_assert(sizeof(struct secev_event) == 872, "secev_event layout changed: update datapath/secev.go");

/* Keeps struct secev_event in the object's BTF, for TestSecevLayoutMatchesBTF. */
static struct secev_event *secev_event_btf __attribute__((used));
