package datapath

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// inNetns runs a shell command in the test's namespace and fails the test
// if it fails.
func shInNetns(t *testing.T, netns, script string) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", netns, "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", script, err, out)
	}
}

// once waits for a record and checks that it came exactly once.
func (c *collector) once(t *testing.T, what string, match func(SecurityRecord) bool) SecurityRecord {
	t.Helper()
	r := c.wait(t, what, match)
	time.Sleep(100 * time.Millisecond)
	if n := c.count(match); n != 1 {
		t.Errorf("%s: %d records, want 1", what, n)
	}
	return r
}

// Paths relative to the cwd are made absolute in the kernel, as the
// process in a pod's namespace sees them: `cd /etc && cat shadow` opens
// /etc/shadow, and so does `cat ../shadow` from /etc/ssl; a walk crosses
// into a mount below; a non-canonical absolute path passes the prefix
// filter for user space to clean.
func TestPrivilegedSecurityEventsRelativeResolved(t *testing.T) {
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	if err := os.MkdirAll(filepath.Join(mnt, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "sub", "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, c := startSecurityEvents(t, SecurityFilter{Prefixes: []string{"/etc/shadow", mnt + "/sub/f", dir + "/only"}})
	name := fmt.Sprintf("secev22-rel-%d", os.Getpid())
	ino := newTestNetns(t, name)

	shInNetns(t, name, "cd /etc && cat shadow >/dev/null")
	r := c.once(t, "cd /etc && cat shadow", func(r SecurityRecord) bool {
		return r.NetnsIno == ino && r.Type == SecevOpen && r.Comm == "cat" && r.Path == "/etc/shadow" && r.Argv[len(r.Argv)-1] == "shadow"
	})
	if r.EvFlags&SecevFlagResolved == 0 || r.EvFlags&SecevFlagRelative != 0 || r.Dirfd != -100 || r.Ret < 0 {
		t.Errorf("cd /etc && cat shadow: %+v", r)
	}
	shInNetns(t, name, "cd /etc/ssl && cat ../shadow >/dev/null; cd / && cat ./etc/shadow >/dev/null")
	c.once(t, "cat ../shadow", func(r SecurityRecord) bool {
		return r.NetnsIno == ino && r.Path == "/etc/shadow" && r.Argv[len(r.Argv)-1] == "../shadow" && r.EvFlags&SecevFlagResolved != 0
	})
	c.once(t, "cat ./etc/shadow", func(r SecurityRecord) bool {
		return r.NetnsIno == ino && r.Path == "/etc/shadow" && r.Argv[len(r.Argv)-1] == "./etc/shadow" && r.EvFlags&SecevFlagResolved != 0
	})
	shInNetns(t, name, fmt.Sprintf("cd %s/sub && cat f", mnt))
	c.once(t, "a relative open below a mount point", func(r SecurityRecord) bool {
		return r.NetnsIno == ino && r.Path == mnt+"/sub/f" && r.EvFlags&SecevFlagResolved != 0
	})
	// Not canonical: passes though its bytes are not under the prefix.
	shInNetns(t, name, fmt.Sprintf("cat %s/sub/../only 2>/dev/null; cat %s//only 2>/dev/null; cat %s/other 2>/dev/null; true", dir, dir, dir))
	for _, p := range []string{dir + "/sub/../only", dir + "//only"} {
		c.once(t, p, func(r SecurityRecord) bool { return r.NetnsIno == ino && r.Path == p })
	}
	if n := c.count(func(r SecurityRecord) bool { return r.Path == dir+"/other" }); n != 0 {
		t.Errorf("an open outside the prefixes left the kernel %d times", n)
	}
}

// Renames, unlinks, rmdirs and chmods under a watched prefix are reported
// once each, by every syscall that does them, with both paths of a rename
// resolved; outside the prefix they stay in the kernel. Real processes in
// a namespace of the test's own carry its inode.
func TestPrivilegedSecurityEventsFileOps(t *testing.T) {
	dir := t.TempDir()
	w := filepath.Join(dir, "w")
	if err := os.Mkdir(w, 0o755); err != nil {
		t.Fatal(err)
	}
	s, c := startSecurityEvents(t, SecurityFilter{
		Renames: FileOpFilter{Prefixes: []string{w + "/"}},
		Unlinks: FileOpFilter{Prefixes: []string{w + "/"}},
		Chmods:  FileOpFilter{Prefixes: []string{w + "/"}},
	})
	name := fmt.Sprintf("secev22-fops-%d", os.Getpid())
	ino := newTestNetns(t, name)

	// coreutils in the namespace, with relative paths.
	shInNetns(t, name, fmt.Sprintf("cd %s && touch a && mv a b && chmod 4755 b && mv b ../out && rm ../out && mkdir d && rmdir d && "+
		"touch ../o1 && mv ../o1 ../o2 && chmod 600 ../o2 && rm ../o2", w))
	mine := func(typ uint32, p string) func(r SecurityRecord) bool {
		return func(r SecurityRecord) bool { return r.NetnsIno == ino && r.Type == typ && r.Path == p }
	}
	r := c.once(t, "mv a b", mine(SecevRename, w+"/a"))
	if r.Path2 != w+"/b" || r.Ret != 0 || r.Comm != "mv" || r.EvFlags&(SecevFlagResolved|SecevFlagPath2Resolved) != SecevFlagResolved|SecevFlagPath2Resolved {
		t.Errorf("mv a b: %+v", r)
	}
	r = c.once(t, "mv b ../out", mine(SecevRename, w+"/b"))
	if r.Path2 != dir+"/out" {
		t.Errorf("mv b ../out: %+v", r)
	}
	r = c.once(t, "chmod 4755 b", mine(SecevChmod, w+"/b"))
	if r.Mode&0o7777 != 0o4755 || r.Ret != 0 || r.Comm != "chmod" {
		t.Errorf("chmod: %+v", r)
	}
	c.once(t, "rmdir d", mine(SecevUnlink, w+"/d"))
	time.Sleep(100 * time.Millisecond)
	if n := c.count(func(r SecurityRecord) bool {
		return r.NetnsIno == ino && (r.Path == dir+"/out" || r.Path == dir+"/o1" || r.Path == dir+"/o2")
	}); n != 0 {
		t.Errorf("%d operations outside the prefix left the kernel", n)
	}

	// Each syscall, from this process.
	me := uint32(os.Getpid())
	at := func(p string) string { return filepath.Join(w, p) }
	touch := func(p string) {
		if err := os.WriteFile(at(p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw := func(nr uintptr, args ...string) {
		var ptrs [2]uintptr
		for i, a := range args {
			b, err := unix.BytePtrFromString(a)
			if err != nil {
				t.Fatal(err)
			}
			ptrs[i] = uintptr(unsafePointer(b))
		}
		if _, _, e := unix.Syscall(nr, ptrs[0], ptrs[1], 0); e != 0 {
			t.Fatalf("syscall %d %v: %v", nr, args, e)
		}
	}
	dfd, err := unix.Open(w, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	touch("r1")
	raw(unix.SYS_RENAME, at("r1"), at("r2"))
	if err := unix.Renameat(dfd, "r2", dfd, "r3"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Renameat2(dfd, "r3", unix.AT_FDCWD, at("r4"), unix.RENAME_NOREPLACE); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(at("r4"))
	if err != nil {
		t.Fatal(err)
	}
	ffd := int32(f.Fd())
	if err := unix.Fchmod(int(ffd), 0o2700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fchmodat(dfd, "r4", 0o600, 0); err != nil {
		t.Fatal(err)
	}
	raw(unix.SYS_CHMOD, at("r4"))
	f.Close()
	const sysFchmodat2 = 452
	_, _, fchmodat2Err := unix.Syscall6(sysFchmodat2, uintptr(dfd), uintptr(unsafePointer(mustBytes(t, "r4"))), 0o640, unix.AT_SYMLINK_NOFOLLOW, 0, 0)
	raw(unix.SYS_UNLINK, at("r4"))
	touch("u")
	if err := unix.Unlinkat(dfd, "u", 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(at("dd"), 0o755); err != nil {
		t.Fatal(err)
	}
	raw(unix.SYS_RMDIR, at("dd"))

	for _, k := range []struct {
		what          string
		typ           uint32
		sys           uint16
		path, path2   string
		mode          uint32
		dirfd, dirfd2 int32
	}{
		{"rename", SecevRename, SecevSysRename, at("r1"), at("r2"), 0, -100, -100},
		{"renameat", SecevRename, SecevSysRenameat, at("r2"), at("r3"), 0, int32(dfd), int32(dfd)},
		{"renameat2", SecevRename, SecevSysRenameat2, at("r3"), at("r4"), 0, int32(dfd), -100},
		{"fchmod", SecevChmod, SecevSysFchmod, at("r4"), "", 0o2700, ffd, 0},
		{"fchmodat", SecevChmod, SecevSysFchmodat, at("r4"), "", 0o600, int32(dfd), 0},
		{"unlink", SecevUnlink, SecevSysUnlink, at("r4"), "", 0, -100, 0},
		{"unlinkat", SecevUnlink, SecevSysUnlinkat, at("u"), "", 0, int32(dfd), 0},
		{"rmdir", SecevUnlink, SecevSysRmdir, at("dd"), "", 0, -100, 0},
	} {
		r := c.once(t, k.what, func(r SecurityRecord) bool { return r.PID == me && r.Syscall == k.sys && r.Path == k.path })
		if r.Type != k.typ || r.Path2 != k.path2 || r.Ret != 0 || r.Dirfd != k.dirfd || (k.path2 != "" && r.Dirfd2 != k.dirfd2) ||
			(k.mode != 0 && r.Mode&0o7777 != k.mode) {
			t.Errorf("%s: %+v", k.what, r)
		}
	}
	c.once(t, "chmod", func(r SecurityRecord) bool { return r.PID == me && r.Syscall == SecevSysChmod && r.Path == at("r4") })
	if fchmodat2Err == 0 || fchmodat2Err == unix.EOPNOTSUPP {
		// The kernel has fchmodat2 (EOPNOTSUPP: no symlink modes here).
		r := c.once(t, "fchmodat2", func(r SecurityRecord) bool { return r.PID == me && r.Syscall == SecevSysFchmodat2 })
		if r.Path != at("r4") || r.Flags != unix.AT_SYMLINK_NOFOLLOW {
			t.Errorf("fchmodat2: %+v", r)
		}
	}
	st, err := s.Stats()
	if err != nil || st.Filtered == 0 {
		t.Errorf("stats %+v %v", st, err)
	}
}

func mustBytes(t *testing.T, s string) *byte {
	b, err := unix.BytePtrFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func unsafePointer(b *byte) unsafe.Pointer { return unsafe.Pointer(b) }
