package secevents

import (
	"strings"
	"time"
)

// Event is one kernel event as rules see it: the process, the file, and
// where it ran (the pod or the node).
type Event struct {
	Time time.Time
	Num  uint64 // the agent's event number, from 1
	// Type names the syscall as Falco does: execve, open, openat, openat2,
	// rename, renameat, renameat2, unlink, unlinkat, rmdir, chmod, fchmod,
	// fchmodat, fchmodat2; and procexit for a process's end.
	Type string

	PID, PPID uint32
	UID       uint32
	// Name is the process name: for an exec the file executed's base
	// name, else the kernel's comm (cut to 15 bytes).
	Name    string
	PName   string   // the parent's comm
	ExePath string   // exec: the file executed
	Argv    []string // argv, bounded by the kernel (512 bytes)

	// File opens and operations.
	File     string // the path (rename: the old one), absolute and clean unless Relative
	Relative bool   // the path was relative to a dirfd or the cwd and could not be resolved
	File2    string // rename: the new path
	Flags    uint32 // open flags; unlinkat, renameat2, fchmodat2 flags
	Mode     uint32 // open: the mode; chmod: the new mode
	Dirfd    int32  // the dirfd (AT_FDCWD -100); fchmod: the fd
	Dirfd2   int32  // renameat, renameat2: the new path's dirfd
	Ret      int32  // the syscall's result: fd, 0, or -errno; procexit: exit code
	Killed   bool   // a kill rule's action sent the process SIGKILL

	// Net is set on network events (Type connect or dns), from flows.
	Net *NetEvent

	// Where: a pod (Namespace and Pod set) or the node (both empty).
	Node        string
	Namespace   string
	Pod         string
	ContainerID string // "host" on the node; in the lab, the pod's netns name
	Labels      map[string]string
}

// Exe is argv[0], as Falco's proc.exe.
func (e *Event) Exe() string {
	if len(e.Argv) > 0 {
		return e.Argv[0]
	}
	return e.Name
}

// Cmdline is the name and arguments, as Falco's proc.cmdline.
func (e *Event) Cmdline() string {
	if len(e.Argv) <= 1 {
		return e.Name
	}
	return e.Name + " " + strings.Join(e.Argv[1:], " ")
}
