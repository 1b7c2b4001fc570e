package datapath

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Every numeric #define of secev.h has its Go mirror, with the same value.
func TestSecevHeaderMatches(t *testing.T) {
	goSecev := map[string]uint64{
		"SECEV_PATH_MAX": SecevPathMax, "SECEV_ARGV_MAX": SecevArgvMax, "SECEV_LPM_BYTES": SecevLPMBytes,
		"SECEV_NAME_MAX": SecevNameMax, "SECEV_EXEC": SecevExec, "SECEV_EXIT": SecevExit, "SECEV_OPEN": SecevOpen,
		"SECEV_SYS_OPEN": SecevSysOpen, "SECEV_SYS_OPENAT": SecevSysOpenat, "SECEV_SYS_OPENAT2": SecevSysOpenat2,
		"SECEV_F_RELATIVE": SecevFlagRelative, "SECEV_F_PATH_TRUNC": SecevFlagPathTrunc, "SECEV_F_ARGV_TRUNC": SecevFlagArgvTrunc,
		"SECEV_CFG_EXEC": secevCfgExec, "SECEV_CFG_OPEN": secevCfgOpen, "SECEV_CFG_EXIT": secevCfgExit,
		"SECEV_CFG_RELATIVE": secevCfgRelative, "SECEV_CFG_MAX": secevCfgMax,
		"SECEV_RENAME": SecevRename, "SECEV_UNLINK": SecevUnlink, "SECEV_CHMOD": SecevChmod,
		"SECEV_SYS_RENAME": SecevSysRename, "SECEV_SYS_RENAMEAT": SecevSysRenameat, "SECEV_SYS_RENAMEAT2": SecevSysRenameat2,
		"SECEV_SYS_UNLINK": SecevSysUnlink, "SECEV_SYS_UNLINKAT": SecevSysUnlinkat, "SECEV_SYS_RMDIR": SecevSysRmdir,
		"SECEV_SYS_CHMOD": SecevSysChmod, "SECEV_SYS_FCHMOD": SecevSysFchmod, "SECEV_SYS_FCHMODAT": SecevSysFchmodat,
		"SECEV_SYS_FCHMODAT2": SecevSysFchmodat2, "SECEV_F_RESOLVED": SecevFlagResolved,
		"SECEV_F_PATH2_RELATIVE": SecevFlagPath2Relative, "SECEV_F_PATH2_TRUNC": SecevFlagPath2Trunc,
		"SECEV_F_PATH2_RESOLVED": SecevFlagPath2Resolved, "SECEV_CFG_RENAME": secevCfgRename,
		"SECEV_CFG_UNLINK": secevCfgUnlink, "SECEV_CFG_CHMOD": secevCfgChmod,
		"SECEV_K_RENAME": secevKRename, "SECEV_K_UNLINK": secevKUnlink, "SECEV_K_CHMOD": secevKChmod,
		"SECEV_STAT_SENT": secevStatSent, "SECEV_STAT_FILTERED": secevStatFiltered, "SECEV_STAT_LIMITED": secevStatLimited,
		"SECEV_STAT_FULL": secevStatFull, "SECEV_STAT_MAX": 4,
	}
	c, where := headerDefines(t)
	for name, file := range where {
		if file != "secev.h" {
			continue
		}
		want, ok := goSecev[name]
		if !ok {
			t.Errorf("secev.h defines %s, which no Go constant mirrors", name)
			continue
		}
		if c[name] != want {
			t.Errorf("%s: secev.h says %d, Go says %d", name, c[name], want)
		}
	}
}

// struct secev_event's layout in the compiled object's BTF is the one
// DecodeSecurityRecord reads.
func TestSecevLayoutMatchesBTF(t *testing.T) {
	spec, err := loadSecev()
	if err != nil {
		t.Fatal(err)
	}
	var s *btf.Struct
	if err := spec.Types.TypeByName("secev_event", &s); err != nil {
		t.Fatalf("secev_event in BTF: %v", err)
	}
	if s.Size != SecevRecordSize {
		t.Errorf("sizeof(struct secev_event) = %d, Go = %d", s.Size, SecevRecordSize)
	}
	want := map[string]uint32{"ts_ns": secOffTs, "netns_ino": secOffNetns, "cgroup_id": secOffCgroup, "type": secOffType,
		"pid": secOffPid, "tid": secOffTid, "ppid": secOffPpid, "uid": secOffUID, "gid": secOffGID, "ret": secOffRet,
		"flags": secOffFlags, "mode": secOffMode, "syscall": secOffSyscall, "ev_flags": secOffEvFlags,
		"argv_len": secOffArgvLen, "dirfd": secOffDirfd, "comm": secOffComm, "pcomm": secOffPcomm,
		"path": secOffPath, "argv": secOffArgv, "path2": secOffPath2, "dirfd2": secOffDirfd2, "pad2": secOffPad2}
	for _, m := range s.Members {
		off, ok := want[m.Name]
		if !ok {
			t.Errorf("member %s has no Go offset", m.Name)
			continue
		}
		if got := m.Offset.Bytes(); got != off {
			t.Errorf("member %s at %d in BTF, %d in Go", m.Name, got, off)
		}
	}
}

func TestSecurityRecordRoundTrip(t *testing.T) {
	in := SecurityRecord{TimeNs: 1, NetnsIno: 2, CgroupID: 3, Type: SecevOpen, PID: 4, TID: 5, PPID: 6, UID: 7, GID: 8,
		Ret: -2, Flags: 0o101, Mode: 0o644, Syscall: SecevSysOpenat2, EvFlags: SecevFlagRelative, Dirfd: -100,
		Comm: "cat", PComm: "sh", Path: "etc/shadow", Argv: []string{"cat", "", "etc/shadow"}, Path2: "/usr/bin/x", Dirfd2: 7}
	out, err := DecodeSecurityRecord(EncodeSecurityRecord(in))
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out) != fmt.Sprint(in) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", out, in)
	}
	if _, err := DecodeSecurityRecord(make([]byte, 10)); err == nil {
		t.Fatal("short record decoded")
	}
}

func FuzzDecodeSecurityRecord(f *testing.F) {
	f.Add(EncodeSecurityRecord(SecurityRecord{Type: SecevExec, Path: "/bin/sh", Argv: []string{"sh", "-c", "id"}}))
	f.Add(EncodeSecurityRecord(SecurityRecord{Type: SecevRename, Syscall: SecevSysRenameat2, Path: "/tmp/a", Path2: "/usr/bin/a",
		Dirfd: -100, Dirfd2: 3, EvFlags: SecevFlagResolved | SecevFlagPath2Trunc}))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeSecurityRecord(b)
		if err != nil {
			return
		}
		if len(r.Path) >= SecevPathMax || len(r.Path2) >= SecevPathMax || len(r.Comm) >= 17 {
			t.Fatalf("field beyond its bound: %+v", r)
		}
		again, err := DecodeSecurityRecord(EncodeSecurityRecord(r))
		if err != nil || again.Path != r.Path || again.Type != r.Type || again.Path2 != r.Path2 || again.Dirfd2 != r.Dirfd2 {
			t.Fatalf("re-encode: %v %+v", err, again)
		}
	})
}

// newTestNetns makes a named network namespace with ip(8), removed at
// the end, and returns its inode.
func newTestNetns(t *testing.T, name string) uint64 {
	t.Helper()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	var st unix.Stat_t
	if err := unix.Stat("/run/netns/"+name, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// collect reads records in the background until the test ends.
type collector struct {
	mu   sync.Mutex
	recs []SecurityRecord
}

func (c *collector) wait(t *testing.T, what string, match func(SecurityRecord) bool) SecurityRecord {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		i := slices.IndexFunc(c.recs, match)
		var r SecurityRecord
		if i >= 0 {
			r = c.recs[i]
		}
		c.mu.Unlock()
		if i >= 0 {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no record: %s", what)
	return SecurityRecord{}
}

func (c *collector) count(match func(SecurityRecord) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, r := range c.recs {
		if match(r) {
			n++
		}
	}
	return n
}

func startSecurityEvents(t *testing.T, f SecurityFilter) (*SecurityEvents, *collector) {
	t.Helper()
	requireRoot(t)
	s, err := LoadSecurityEvents(SecurityEventsConfig{Filter: f, EventsPerSecond: 100000})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &collector{}
	done := make(chan error, 1)
	go func() {
		done <- s.Read(ctx, func(raw []byte) {
			r, err := DecodeSecurityRecord(raw)
			if err != nil {
				t.Errorf("decode: %v", err)
				return
			}
			c.mu.Lock()
			c.recs = append(c.recs, r)
			c.mu.Unlock()
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		s.Close()
	})
	return s, c
}

// A shell run in a namespace of the test's own that reads /etc/shadow
// produces an exec record of sh (argv, parent, netns) and an open record
// of /etc/shadow that succeeded; execs and opens outside the filter stay in
// the kernel and are counted as filtered.
func TestPrivilegedSecurityEventsExecOpen(t *testing.T) {
	_, c := startSecurityEvents(t, SecurityFilter{ExecNames: []string{"sh"}, Prefixes: []string{"/etc/shadow", "/etc/secev22-"}})
	name := fmt.Sprintf("secev22-dp-%d", os.Getpid())
	ino := newTestNetns(t, name)
	out, err := exec.Command("ip", "netns", "exec", name, "sh", "-c", "cat /etc/shadow >/dev/null; cat /etc/hostname >/dev/null; true").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	ex := c.wait(t, "exec of sh", func(r SecurityRecord) bool {
		return r.Type == SecevExec && r.NetnsIno == ino && filepath.Base(r.Path) == "sh"
	})
	if !slices.Equal(ex.Argv, []string{"sh", "-c", "cat /etc/shadow >/dev/null; cat /etc/hostname >/dev/null; true"}) {
		t.Errorf("argv %q", ex.Argv)
	}
	if ex.UID != 0 || ex.PPID == 0 || ex.PComm == "" || ex.Comm != "sh" || ex.CgroupID == 0 {
		t.Errorf("exec record %+v", ex)
	}
	op := c.wait(t, "open of /etc/shadow", func(r SecurityRecord) bool {
		return r.Type == SecevOpen && r.NetnsIno == ino && r.Path == "/etc/shadow"
	})
	if op.Comm != "cat" || op.Ret < 0 || op.Flags&unix.O_ACCMODE != unix.O_RDONLY || op.EvFlags&SecevFlagRelative != 0 {
		t.Errorf("open record %+v", op)
	}
	if !slices.Equal(op.Argv, []string{"cat", "/etc/shadow"}) {
		t.Errorf("open argv %q", op.Argv)
	}
	time.Sleep(100 * time.Millisecond)
	if n := c.count(func(r SecurityRecord) bool {
		return r.NetnsIno == ino && (r.Path == "/etc/hostname" || filepath.Base(r.Path) == "cat")
	}); n != 0 {
		t.Errorf("%d records outside the filter left the kernel", n)
	}
}

// openat2 and a failed open are reported with their syscall and result; a
// path relative to a dirfd is resolved; one that cannot be is marked, and
// only passes when asked for.
func TestPrivilegedSecurityEventsOpenat2Relative(t *testing.T) {
	dir := t.TempDir()
	s, c := startSecurityEvents(t, SecurityFilter{Prefixes: []string{dir + "/"}})
	f := filepath.Join(dir, "x")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, f, &unix.OpenHow{Flags: unix.O_RDWR})
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	_, _ = os.Open(filepath.Join(dir, "missing"))
	r := c.wait(t, "openat2", func(r SecurityRecord) bool { return r.Path == f && r.Syscall == SecevSysOpenat2 })
	if r.Ret < 0 || r.Flags&unix.O_ACCMODE != unix.O_RDWR || r.PID != uint32(os.Getpid()) {
		t.Errorf("openat2 record %+v", r)
	}
	r = c.wait(t, "failed open", func(r SecurityRecord) bool { return r.Path == filepath.Join(dir, "missing") })
	if r.Ret != -int32(unix.ENOENT) {
		t.Errorf("failed open ret %d", r.Ret)
	}

	// Relative to a dirfd: resolved, and so under the prefix.
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	if fd, err := unix.Openat(dfd, "x", unix.O_RDONLY, 0); err != nil {
		t.Fatal(err)
	} else {
		unix.Close(fd)
	}
	r = c.wait(t, "dirfd-relative open", func(r SecurityRecord) bool { return r.Path == f && r.Dirfd == int32(dfd) })
	if r.EvFlags&SecevFlagResolved == 0 || r.EvFlags&SecevFlagRelative != 0 || r.Syscall != SecevSysOpenat {
		t.Errorf("dirfd-relative record %+v", r)
	}
	// A dirfd that is no directory's: not resolved, marked, and only sent
	// when asked for.
	const badfd = 9999
	openBad := func() { _, _ = unix.Openat(badfd, "secev22-unresolved", unix.O_RDONLY, 0) }
	openBad()
	if err := s.SetFilter(SecurityFilter{Prefixes: []string{dir + "/"}, Relative: true}); err != nil {
		t.Fatal(err)
	}
	openBad()
	isBad := func(r SecurityRecord) bool { return r.Path == "secev22-unresolved" && r.PID == uint32(os.Getpid()) }
	r = c.wait(t, "unresolved relative open", isBad)
	if r.EvFlags&SecevFlagRelative == 0 || r.EvFlags&SecevFlagResolved != 0 || r.Dirfd != badfd || r.Ret != -int32(unix.EBADF) {
		t.Errorf("unresolved record %+v", r)
	}
	if n := c.count(isBad); n != 1 {
		t.Errorf("%d unresolved records, want 1 (the first open was before Relative)", n)
	}
	st, err := s.Stats()
	if err != nil || st.Sent == 0 || st.Filtered == 0 {
		t.Errorf("stats %+v %v", st, err)
	}
}

// The per-CPU rate limit holds events back and counts them (the agent
// sends the count as LostEvents); nothing it counts reaches the ring.
func TestPrivilegedSecurityEventsRateLimit(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	s, err := LoadSecurityEvents(SecurityEventsConfig{Filter: SecurityFilter{Prefixes: []string{dir + "/"}}, EventsPerSecond: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	got := 0
	done := make(chan error, 1)
	go func() {
		done <- s.Read(ctx, func(raw []byte) {
			if r, err := DecodeSecurityRecord(raw); err == nil && strings.HasPrefix(r.Path, dir) {
				mu.Lock()
				got++
				mu.Unlock()
			}
		})
	}()
	const n = 200
	for i := range n {
		_, _ = os.Open(filepath.Join(dir, fmt.Sprint(i)))
	}
	time.Sleep(200 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if st.Limited == 0 || got >= n || uint64(got)+st.Limited < n {
		t.Errorf("%d of %d opens reported, %d counted as limited (%+v)", got, n, st.Limited, st)
	}
}

// The file-operation trie answers with the longest match only, so each
// prefix carries the kinds of the shorter prefixes it extends; a kind
// that passes everything adds no prefixes.
func TestFileOpPrefixes(t *testing.T) {
	got := fileOpPrefixes(SecurityFilter{
		Renames: FileOpFilter{Prefixes: []string{"/usr/", "/etc/x"}},
		Unlinks: FileOpFilter{Prefixes: []string{"/usr/bin/"}},
		Chmods:  FileOpFilter{All: true, Prefixes: []string{"/ignored"}},
	})
	want := map[string]uint8{"/usr/": secevKRename, "/etc/x": secevKRename, "/usr/bin/": secevKRename | secevKUnlink}
	if len(got) != len(want) {
		t.Errorf("%d entries, want %d: %v", len(got), len(want), got)
	}
	for p, bits := range want {
		if got[lpmKey(p)] != bits {
			t.Errorf("%s: bits %#x, want %#x", p, got[lpmKey(p)], bits)
		}
	}
}
