package secevents

import (
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// HostContainerID is container.id for a process in the node's own
// namespace, as in Falco.
const HostContainerID = "host"

// field is one supported Falco field: its value for an event, and whether
// the event has it at all (an absent field matches no comparison but
// "!=", as in Falco).
type field struct {
	get     func(e *Event) (string, bool)
	numeric bool
	cidr    bool // = and in compare an address with CIDRs
	// addr and int, when set, are get for cidr and numeric fields without
	// the string: the network rules run on every connection a pod opens,
	// and formatting a value only to parse it back was most of a rule's
	// cost.
	addr func(e *Event) (netip.Addr, bool)
	int  func(e *Event) (int64, bool)
	// kinds are the event kinds that have the field (kindAll: all).
	doc string
}

func str(f func(e *Event) string) func(e *Event) (string, bool) {
	return func(e *Event) (string, bool) { return f(e), true }
}

func num[T int32 | uint32](f func(e *Event) T) func(e *Event) (string, bool) {
	return func(e *Event) (string, bool) { return strconv.FormatInt(int64(f(e)), 10), true }
}

func isOpen(e *Event) bool { return strings.HasPrefix(e.Type, "open") }

// Falco's evt.type values of loupe's file operations.
var (
	renameTypes = []string{"rename", "renameat", "renameat2"}
	unlinkTypes = []string{"unlink", "unlinkat", "rmdir"}
	chmodTypes  = []string{"chmod", "fchmod", "fchmodat", "fchmodat2"}
	openTypes   = []string{"open", "openat", "openat2"}
)

// isFileOp: an open, rename, unlink or chmod (the syscall has a result).
func isFileOp(e *Event) bool {
	return isOpen(e) || slices.Contains(renameTypes, e.Type) || slices.Contains(unlinkTypes, e.Type) || slices.Contains(chmodTypes, e.Type)
}

// hasFd: the events whose fd.* fields name a file: opens (the fd they
// return) and fchmod (the fd it changes).
func hasFd(e *Event) bool { return isOpen(e) || e.Type == "fchmod" }

func when(has func(e *Event) bool, f func(e *Event) string) func(e *Event) (string, bool) {
	return func(e *Event) (string, bool) {
		if !has(e) {
			return "", false
		}
		return f(e), true
	}
}

func ofTypes(types ...[]string) func(e *Event) bool {
	all := slices.Concat(types...)
	return func(e *Event) bool { return slices.Contains(all, e.Type) }
}

// modeString is a chmod mode as Falco prints it: the bits' names.
func modeString(m uint32) string {
	var names []string
	for _, b := range []struct {
		bit  uint32
		name string
	}{{unix.S_IXOTH, "S_IXOTH"}, {unix.S_IWOTH, "S_IWOTH"}, {unix.S_IROTH, "S_IROTH"}, {unix.S_IXGRP, "S_IXGRP"},
		{unix.S_IWGRP, "S_IWGRP"}, {unix.S_IRGRP, "S_IRGRP"}, {unix.S_IXUSR, "S_IXUSR"}, {unix.S_IWUSR, "S_IWUSR"},
		{unix.S_IRUSR, "S_IRUSR"}, {unix.S_ISVTX, "S_ISVTX"}, {unix.S_ISGID, "S_ISGID"}, {unix.S_ISUID, "S_ISUID"}} {
		if m&b.bit != 0 {
			names = append(names, b.name)
		}
	}
	return strings.Join(names, "|")
}

// eventArgs are the evt.arg.NAME fields loupe supports: Falco's parameter
// names of each syscall's exit event, and the syscalls that have them.
var eventArgs = map[string]struct {
	has     func(e *Event) bool
	get     func(e *Event) string
	numeric bool
}{
	"name":     {has: ofTypes(openTypes, []string{"unlinkat"}), get: func(e *Event) string { return e.File }},
	"path":     {has: ofTypes([]string{"unlink", "rmdir"}), get: func(e *Event) string { return e.File }},
	"filename": {has: ofTypes([]string{"chmod", "fchmodat", "fchmodat2"}), get: func(e *Event) string { return e.File }},
	"oldpath":  {has: ofTypes(renameTypes), get: func(e *Event) string { return e.File }},
	"newpath":  {has: ofTypes(renameTypes), get: func(e *Event) string { return e.File2 }},
	"mode":     {has: ofTypes(chmodTypes), get: func(e *Event) string { return modeString(e.Mode) }},
	"fd": {has: ofTypes(openTypes, []string{"fchmod"}), get: func(e *Event) string {
		if e.Type == "fchmod" {
			return strconv.Itoa(int(e.Dirfd))
		}
		return strconv.Itoa(int(e.Ret))
	}, numeric: true},
	"dirfd":    {has: ofTypes([]string{"openat", "openat2", "unlinkat", "fchmodat", "fchmodat2"}), get: func(e *Event) string { return strconv.Itoa(int(e.Dirfd)) }, numeric: true},
	"olddirfd": {has: ofTypes([]string{"renameat", "renameat2"}), get: func(e *Event) string { return strconv.Itoa(int(e.Dirfd)) }, numeric: true},
	"newdirfd": {has: ofTypes([]string{"renameat", "renameat2"}), get: func(e *Event) string { return strconv.Itoa(int(e.Dirfd2)) }, numeric: true},
	"res":      {has: ofTypes(renameTypes, unlinkTypes, chmodTypes), get: func(e *Event) string { return strconv.Itoa(int(e.Ret)) }, numeric: true},
}

func onOpen(f func(e *Event) string) func(e *Event) (string, bool) {
	return func(e *Event) (string, bool) {
		if !isOpen(e) {
			return "", false
		}
		return f(e), true
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// fields is the supported subset of Falco's fields (docs/security-events.md
// lists them with these meanings).
var fields = map[string]field{
	"evt.type": {get: str(func(e *Event) string { return e.Type }), doc: "execve, open, openat, openat2, rename, renameat, renameat2, unlink, unlinkat, rmdir, chmod, fchmod, fchmodat, fchmodat2, procexit"},
	"evt.num":  {get: func(e *Event) (string, bool) { return strconv.FormatUint(e.Num, 10), true }, numeric: true, doc: "the agent's event number, from 1"},
	"evt.dir":  {get: str(func(*Event) string { return "<" }), doc: "< : every event is reported at the syscall's exit"},
	"evt.res": {get: when(isFileOp, func(e *Event) string {
		if e.Ret >= 0 {
			return "SUCCESS"
		}
		return unix.ErrnoName(unix.Errno(-e.Ret))
	}), doc: "SUCCESS or the errno name (ENOENT), for file events"},
	"evt.rawres":         {get: num(func(e *Event) int32 { return e.Ret }), numeric: true, doc: "the syscall's return value"},
	"evt.is_open_read":   {get: onOpen(func(e *Event) string { return boolStr(e.Flags&unix.O_ACCMODE != unix.O_WRONLY) })},
	"evt.is_open_write":  {get: onOpen(func(e *Event) string { return boolStr(e.Flags&unix.O_ACCMODE != unix.O_RDONLY) })},
	"evt.is_open_create": {get: onOpen(func(e *Event) string { return boolStr(e.Flags&unix.O_CREAT != 0) })},
	"proc.name":          {get: str(func(e *Event) string { return e.Name })},
	"proc.exe":           {get: str((*Event).Exe)},
	"proc.exepath": {get: func(e *Event) (string, bool) {
		return e.ExePath, e.Type == "execve"
	}},
	"proc.cmdline": {get: str((*Event).Cmdline)},
	"proc.args": {get: str(func(e *Event) string {
		if len(e.Argv) <= 1 {
			return ""
		}
		return strings.Join(e.Argv[1:], " ")
	})},
	"proc.pname":   {get: str(func(e *Event) string { return e.PName })},
	"proc.pid":     {get: num(func(e *Event) uint32 { return e.PID }), numeric: true},
	"proc.ppid":    {get: num(func(e *Event) uint32 { return e.PPID }), numeric: true},
	"user.uid":     {get: num(func(e *Event) uint32 { return e.UID }), numeric: true},
	"fd.name":      {get: when(hasFd, func(e *Event) string { return e.File })},
	"fd.directory": {get: when(hasFd, func(e *Event) string { return path.Dir(e.File) })},
	"fd.filename":  {get: when(hasFd, func(e *Event) string { return path.Base(e.File) })},
	// Falco's fs.path.*: the path a file syscall works on, resolved.
	"fs.path.name":   {get: when(ofTypes(openTypes, unlinkTypes, chmodTypes), func(e *Event) string { return e.File })},
	"fs.path.source": {get: when(ofTypes(renameTypes), func(e *Event) string { return e.File })},
	"fs.path.target": {get: when(ofTypes(renameTypes), func(e *Event) string { return e.File2 })},
	"fd.num": {get: func(e *Event) (string, bool) {
		if !isOpen(e) {
			return "", false
		}
		return strconv.Itoa(int(max(e.Ret, -1))), true
	}, numeric: true},
	"fd.typechar": {get: onOpen(func(e *Event) string {
		switch {
		case e.Ret < 0:
			return ""
		case e.Flags&unix.O_DIRECTORY != 0:
			return "d"
		}
		return "f"
	})},
	"container.id": {get: str(func(e *Event) string { return e.ContainerID })},
	"k8s.ns.name":  {get: podField(func(e *Event) string { return e.Namespace })},
	"k8s.pod.name": {get: podField(func(e *Event) string { return e.Pod })},
}

func init() {
	for k, v := range netFields() {
		fields[k] = v
	}
}

func podField(f func(e *Event) string) func(e *Event) (string, bool) {
	return func(e *Event) (string, bool) { return f(e), e.Pod != "" }
}

// lookupField resolves a field name, including k8s.pod.label.KEY and
// k8s.pod.label[KEY].
func lookupField(name string) (field, bool) {
	if f, ok := fields[name]; ok {
		return f, true
	}
	if a, ok := eventArgs[strings.TrimPrefix(name, "evt.arg.")]; ok && strings.HasPrefix(name, "evt.arg.") {
		return field{get: when(a.has, a.get), numeric: a.numeric}, true
	}
	var key string
	switch {
	case strings.HasPrefix(name, "k8s.pod.label.") && len(name) > len("k8s.pod.label."):
		key = name[len("k8s.pod.label."):]
	case strings.HasPrefix(name, "k8s.pod.label[") && strings.HasSuffix(name, "]") && len(name) > len("k8s.pod.label[]"):
		key = name[len("k8s.pod.label[") : len(name)-1]
	default:
		return field{}, false
	}
	return field{get: func(e *Event) (string, bool) {
		v, ok := e.Labels[key]
		return v, ok
	}}, true
}

// FieldNames lists the supported fields (for docs and error messages).
func FieldNames() []string {
	out := make([]string, 0, len(fields)+1)
	for n := range fields {
		out = append(out, n)
	}
	for a := range eventArgs {
		out = append(out, "evt.arg."+a)
	}
	return append(out, "k8s.pod.label.KEY")
}
