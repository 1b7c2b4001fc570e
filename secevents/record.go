package secevents

import (
	"path"
	"path/filepath"
	"strings"

	"github.com/loupe-project/loupe/datapath"
)

// syscallNames are evt.type's values, as Falco spells them, for the
// kernel's syscall numbers of file events.
var syscallNames = map[uint16]string{
	datapath.SecevSysOpen: "open", datapath.SecevSysOpenat: "openat", datapath.SecevSysOpenat2: "openat2",
	datapath.SecevSysRename: "rename", datapath.SecevSysRenameat: "renameat", datapath.SecevSysRenameat2: "renameat2",
	datapath.SecevSysUnlink: "unlink", datapath.SecevSysUnlinkat: "unlinkat", datapath.SecevSysRmdir: "rmdir",
	datapath.SecevSysChmod: "chmod", datapath.SecevSysFchmod: "fchmod", datapath.SecevSysFchmodat: "fchmodat",
	datapath.SecevSysFchmodat2: "fchmodat2",
}

// FromRecord is what rules see of a kernel record, before the agent adds
// where it ran (pod or node), its number and its time. A path the kernel
// resolved, or one given absolute, is cleaned ("/tmp/../etc/shadow" is
// /etc/shadow), as Falco's are: the kernel filter passed it for that.
func FromRecord(rec datapath.SecurityRecord) *Event {
	ev := &Event{PID: rec.PID, PPID: rec.PPID, UID: rec.UID, Name: rec.Comm, PName: rec.PComm, Argv: rec.Argv,
		Ret: rec.Ret, Flags: rec.Flags, Mode: rec.Mode, Dirfd: rec.Dirfd, Dirfd2: rec.Dirfd2}
	switch rec.Type {
	case datapath.SecevExec:
		ev.Type, ev.ExePath = "execve", rec.Path
		if b := filepath.Base(rec.Path); rec.Path != "" && b != "." {
			ev.Name = b // comm is cut to 15 bytes; the file's name is not
		}
	case datapath.SecevExit:
		ev.Type = "procexit"
	default:
		ev.Type = syscallNames[rec.Syscall]
		ev.Relative = rec.EvFlags&datapath.SecevFlagRelative != 0
		ev.File = cleanPath(rec.Path, ev.Relative)
		if rec.Type == datapath.SecevRename {
			ev.File2 = cleanPath(rec.Path2, rec.EvFlags&datapath.SecevFlagPath2Relative != 0)
		}
	}
	ev.Killed = rec.EvFlags&datapath.SecevFlagKilled != 0
	return ev
}

func cleanPath(p string, relative bool) string {
	if relative || !strings.HasPrefix(p, "/") {
		return p
	}
	return path.Clean(p)
}
