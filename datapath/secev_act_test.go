package datapath

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestSecevActHeaderMatches(t *testing.T) {
	c, where := headerDefines(t)
	for name, want := range map[string]uint64{"SECEV_F_KILLED": SecevFlagKilled} {
		if where[name] != "secev_act.h" || c[name] != want {
			t.Errorf("%s: %s says %d, Go says %d", name, where[name], c[name], want)
		}
	}
}

// An exact path's entry holds the NUL (it matches only itself); every
// entry carries the rules of the shorter entries that are its prefixes,
// since the trie returns only the longest match.
func TestKillEntries(t *testing.T) {
	got := map[string]uint64{}
	for k, v := range killEntries([]KillPath{
		{Path: "/etc/shadow", Rules: 1},
		{Path: "/etc/", Prefix: true, Rules: 2},
		{Path: "/etc/shadow", Prefix: true, Rules: 4},
		{Path: "/var/", Prefix: true, Rules: 8},
	}) {
		b := make([]byte, k.Prefixlen/8)
		for i := range b {
			b[i] = byte(k.Path[i])
		}
		got[string(b)] = v
	}
	want := map[string]uint64{"/etc/shadow\x00": 1 | 2 | 4, "/etc/": 2, "/etc/shadow": 2 | 4, "/var/": 8}
	if len(got) != len(want) {
		t.Fatalf("entries %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%q: rules %b, want %b", k, got[k], v)
		}
	}
	if err := (KillSet{Paths: []KillPath{{Path: "rel"}}}).Validate(); err == nil {
		t.Error("a relative kill path was accepted")
	}
	if err := (KillSet{Execs: map[string]uint64{"a-name-longer-than-15": 1}}).Validate(); err == nil {
		t.Error("an executable name the kernel cannot see whole was accepted")
	}
}

// runIn runs argv in the named netns and returns the status a shell
// would give it (128+N for signal N) and its output.
func runIn(t *testing.T, netns string, argv ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns}, argv...)...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%v: %v", argv, err)
	}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), string(out)
	}
	return ws.ExitStatus(), string(out)
}

// The kill actions, in the real kernel: in a selected namespace, an open
// of a protected file dies of SIGKILL at sys_enter_openat before reading
// (nothing of the file is printed), and an exec of a named program dies
// before its first instruction; the same commands in a namespace no rule
// selects run. Near paths (a longer name, a write-only open under a
// read-only rule) are not killed. Records carry the kill mark.
func TestPrivilegedSecurityKill(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("TOPSECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret+"-not", []byte("public\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, c := startSecurityEvents(t, SecurityFilter{Prefixes: []string{dir + "/"}, ExecNames: []string{"sleep"}})
	sel := newTestNetns(t, "loupe-kill-sel")
	other := newTestNetns(t, "loupe-kill-other")
	if err := s.SetKills(KillSet{
		Paths:    []KillPath{{Path: secret, Rules: 1}},
		Execs:    map[string]uint64{"sleep": 2},
		NeedRead: 1,
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetKillNetns(map[uint64]uint64{sel: 1 | 2, other: 0}); err != nil {
		t.Fatal(err)
	}

	code, out := runIn(t, "loupe-kill-sel", "cat", secret)
	if code != 137 || strings.Contains(out, "TOPSECRET") {
		t.Errorf("cat of the protected file in the selected netns: status %d, output %q; want 137 and nothing", code, out)
	}
	code, out = runIn(t, "loupe-kill-other", "cat", secret)
	if code != 0 || !strings.Contains(out, "TOPSECRET") {
		t.Errorf("cat in a netns no rule selects: status %d, output %q; want 0 and the file", code, out)
	}
	if code, out = runIn(t, "loupe-kill-sel", "cat", secret+"-not"); code != 0 {
		t.Errorf("cat of a longer name in the selected netns: status %d (%q), want 0", code, out)
	}
	if code, out = runIn(t, "loupe-kill-sel", "sh", "-c", ": >>"+secret); code != 0 {
		t.Errorf("a write-only open under a read-only kill rule: status %d (%q), want 0", code, out)
	}
	// sleep 5 would take 5s; killed at exec it ends at once.
	if code, out = runIn(t, "loupe-kill-sel", "sleep", "5"); code != 137 {
		t.Errorf("exec of sleep in the selected netns: status %d (%q), want 137", code, out)
	}
	if code, out = runIn(t, "loupe-kill-other", "sleep", "0"); code != 0 {
		t.Errorf("exec of sleep in another netns: status %d (%q), want 0", code, out)
	}

	killedOpen := c.wait(t, "killed open record", func(r SecurityRecord) bool {
		return r.Type == SecevOpen && r.Path == secret && r.NetnsIno == sel
	})
	if killedOpen.EvFlags&SecevFlagKilled == 0 {
		t.Errorf("the killed open's record has no kill mark: %+v", killedOpen)
	}
	otherOpen := c.wait(t, "other open record", func(r SecurityRecord) bool {
		return r.Type == SecevOpen && r.Path == secret && r.NetnsIno == other
	})
	if otherOpen.EvFlags&SecevFlagKilled != 0 {
		t.Errorf("an open in an unselected netns is marked killed: %+v", otherOpen)
	}
	killedExec := c.wait(t, "killed exec record", func(r SecurityRecord) bool {
		return r.Type == SecevExec && r.Comm == "sleep" && r.NetnsIno == sel
	})
	if killedExec.EvFlags&SecevFlagKilled == 0 {
		t.Errorf("the killed exec's record has no kill mark: %+v", killedExec)
	}
	if n, err := s.Kills(); err != nil || n != 2 {
		t.Errorf("kills counted: %d (%v), want 2", n, err)
	}

	// Unselecting the pod stops the action.
	if err := s.SetKillNetns(nil); err != nil {
		t.Fatal(err)
	}
	if code, out = runIn(t, "loupe-kill-sel", "cat", secret); code != 0 {
		t.Errorf("cat after the pod left the selection: status %d (%q), want 0", code, out)
	}
}

// On a kernel that refuses BPF LSM programs the probe says so, naming
// what is missing; where they load it returns nil.
func TestPrivilegedProbeBPFLSM(t *testing.T) {
	requireRoot(t)
	err := ProbeBPFLSM()
	if err == nil {
		t.Log("this kernel runs BPF LSM programs")
		return
	}
	for _, s := range []string{"BPF LSM", "CONFIG_BPF_LSM", `"bpf" in the active LSMs`} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("probe error %q does not name %q", err, s)
		}
	}
	t.Logf("refused: %v", err)
}
