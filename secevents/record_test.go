package secevents

import (
	"strings"
	"testing"

	"github.com/loupe-project/loupe/datapath"
)

// A kernel record becomes the event rules see: evt.type from the
// syscall, resolved paths cleaned, an unresolved one left as given. The
// datapath's privileged tests produce these records from real syscalls.
func TestFromRecord(t *testing.T) {
	dec := func(r datapath.SecurityRecord) *Event {
		t.Helper()
		rec, err := datapath.DecodeSecurityRecord(datapath.EncodeSecurityRecord(r))
		if err != nil {
			t.Fatal(err)
		}
		return FromRecord(rec)
	}
	e := dec(datapath.SecurityRecord{Type: datapath.SecevRename, Syscall: datapath.SecevSysRenameat2, Comm: "mv",
		Path: "/tmp/sub/../a", Path2: "/usr//bin/./a", Dirfd: -100, Dirfd2: 5, EvFlags: datapath.SecevFlagResolved})
	if e.Type != "renameat2" || e.File != "/tmp/a" || e.File2 != "/usr/bin/a" || e.Dirfd2 != 5 || e.Relative {
		t.Errorf("rename %+v", e)
	}
	e = dec(datapath.SecurityRecord{Type: datapath.SecevOpen, Syscall: datapath.SecevSysOpenat, Path: "../x/./y",
		EvFlags: datapath.SecevFlagRelative})
	if e.Type != "openat" || e.File != "../x/./y" || !e.Relative {
		t.Errorf("unresolved open %+v", e)
	}
	for sys, name := range map[uint16]string{datapath.SecevSysUnlinkat: "unlinkat", datapath.SecevSysRmdir: "rmdir",
		datapath.SecevSysFchmod: "fchmod", datapath.SecevSysFchmodat2: "fchmodat2"} {
		typ := uint32(datapath.SecevUnlink)
		if strings.Contains(name, "chmod") {
			typ = datapath.SecevChmod
		}
		if e := dec(datapath.SecurityRecord{Type: typ, Syscall: sys, Path: "/a"}); e.Type != name || e.File != "/a" {
			t.Errorf("%s: %+v", name, e)
		}
	}
}

// Falco's evt.arg.NAME fields exist for the syscalls that have the
// parameter; others are refused by name.
func TestEventArgs(t *testing.T) {
	rs := mustCompile(t, src("a.yaml", `
- rule: args
  condition: evt.arg.mode contains S_ISUID and evt.arg.filename startswith /tmp/ and evt.arg.dirfd = -100
  output: "%evt.type %evt.arg.filename %evt.arg.mode %evt.arg.res %fs.path.name %evt.arg.name"
  priority: INFO
`))
	en := NewEngine(rs)
	e := fileOp("fchmodat", "/tmp/x", "", 0o4750)
	m, ok := en.Match(e)
	if !ok || m.Output != "fchmodat /tmp/x S_IXGRP|S_IRGRP|S_IXUSR|S_IWUSR|S_IRUSR|S_ISUID 0 /tmp/x <NA>" {
		t.Errorf("fchmodat: %v %q", ok, m.Output)
	}
	e.Type = "fchmod" // no filename parameter, no dirfd
	if _, ok := en.Match(e); ok {
		t.Error("fchmod matched evt.arg.filename")
	}
	_, err := Compile([]Source{src("b.yaml", "- rule: b\n  condition: evt.arg.flags contains O_TRUNC\n  output: o\n  priority: INFO\n")}, nil)
	if err == nil || !strings.Contains(err.Error(), `unsupported field "evt.arg.flags"`) {
		t.Errorf("evt.arg.flags: %v", err)
	}
}
