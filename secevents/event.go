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
	// Type names the syscall as Falco does: execve, open, openat, openat2;
	// and procexit for a process's end.
	Type string

	PID, PPID uint32
	UID       uint32
	// Name is the process name: for an exec the file executed's base
	// name, else the kernel's comm (cut to 15 bytes).
	Name    string
	PName   string   // the parent's comm
	ExePath string   // exec: the file executed
	Argv    []string // argv, bounded by the kernel (512 bytes)

	// File opens.
	File     string // the path, absolute unless Relative
	Relative bool   // the path was relative to a dirfd or the cwd, not resolved
	Flags    uint32 // open flags
	Ret      int32  // the syscall's result: fd, or -errno; procexit: exit code
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
