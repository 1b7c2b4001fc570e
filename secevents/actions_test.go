package secevents

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/loupe-project/loupe/datapath"
)

func killRules(t *testing.T) *Rules {
	t.Helper()
	b, err := os.ReadFile("../examples/security/demo-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return mustCompile(t, DefaultRules(), src("kill.yaml", string(b)), src("exec.yaml", `
- rule: Kill miners
  desc: d
  condition: evt.type = execve and proc.name in (xmrig, minerd) and container.id != host
  output: o
  priority: CRITICAL
  action: kill
`))
}

// A kill rule compiles to kernel data that decides it exactly: its paths
// or programs under its own bit, the open modes it needs, and the pods it
// selects; the node and other pods are never selected.
func TestKillRuleCompiles(t *testing.T) {
	rs := killRules(t)
	kr := rs.KillRules()
	if len(kr) != 2 || kr[0].Name != "Kill shadow readers in frontend" || kr[1].Name != "Kill miners" {
		t.Fatalf("kill rules %v", kr)
	}
	k := rs.KillSet()
	if len(k.Paths) != 1 || k.Paths[0] != (datapath.KillPath{Path: "/etc/shadow", Rules: 1}) {
		t.Errorf("paths %+v", k.Paths)
	}
	if k.Execs["xmrig"] != 2 || k.Execs["minerd"] != 2 || len(k.Execs) != 2 {
		t.Errorf("execs %v", k.Execs)
	}
	if k.NeedRead != 1 || k.NeedWrite != 0 {
		t.Errorf("need read %b write %b", k.NeedRead, k.NeedWrite)
	}
	for _, c := range []struct {
		ns, pod string
		labels  map[string]string
		cid     string
		want    uint64
	}{
		{"x", "web", map[string]string{"app": "frontend"}, "lab-x-web", 1 | 2},
		{"x", "db", map[string]string{"app": "db"}, "lab-x-db", 2},
		{"", "", nil, HostContainerID, 0},
	} {
		if got := rs.KillSelection(c.ns, c.pod, c.labels, c.cid); got != c.want {
			t.Errorf("%s/%s: selected by %b, want %b", c.ns, c.pod, got, c.want)
		}
	}
	// A killed event is reported by the kill rule, though a default rule
	// (Read sensitive file) comes first in load order.
	e := shadowOpen()
	e.Labels = map[string]string{"app": "frontend"}
	en := NewEngine(rs)
	if m, _ := en.Match(e); m.Rule.Name != "Read sensitive file" {
		t.Errorf("not killed: matched %q", m.Rule.Name)
	}
	e.Killed = true
	if m, _ := en.Match(e); m.Rule.Name != "Kill shadow readers in frontend" {
		t.Errorf("killed: matched %q", m.Rule.Name)
	}
}

// What the kernel cannot decide at the event is refused with the rule's
// file and line, never dropped from the kill.
func TestKillRuleRefused(t *testing.T) {
	for _, c := range []struct{ cond, want string }{
		{"evt.type in (open, openat, openat2) and fd.name = /etc/shadow", "must select its pods"},
		{"evt.type = openat and fd.name = /etc/shadow and container.id != host", "name all three"},
		{"evt.type in (open, openat, openat2) and fd.name = /etc/shadow and evt.res = SUCCESS and container.id != host", "evt.res cannot be decided"},
		{"evt.type in (open, openat, openat2) and fd.name = /etc/shadow and not proc.name = cat and container.id != host", "conjunction"},
		{"evt.type in (open, openat, openat2) and fd.name contains shadow and container.id != host", "fd.name contains is not decided"},
		{"evt.type = execve and proc.name = a-very-long-program-name and container.id != host", "first 15 bytes"},
		{"evt.type = execve and container.id != host", "names its programs"},
	} {
		_, err := Compile([]Source{src("k.yaml", "- rule: K\n  desc: d\n  condition: "+c.cond+"\n  output: o\n  priority: ERROR\n  action: kill\n")}, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "k.yaml:") {
			t.Errorf("%s: error %v, want one naming the file and %q", c.cond, err, c.want)
		}
	}
	_, err := Compile([]Source{src("k.yaml", "- rule: K\n  desc: d\n  condition: proc.name = sh\n  output: o\n  priority: ERROR\n  action: quarantine\n")}, nil)
	if err == nil || !strings.Contains(err.Error(), `k.yaml:6: rule K: unknown action "quarantine"`) {
		t.Errorf("unknown action: %v", err)
	}
}

// deny is refused, with what the kernel lacks, where BPF LSM does not
// load; it is never turned into a report-only rule or a kill.
func TestDenyRefused(t *testing.T) {
	y := "- rule: D\n  desc: d\n  condition: evt.type in (open, openat, openat2) and fd.name = /etc/shadow and container.id != host\n  output: o\n  priority: ERROR\n  action: deny\n"
	lsm := errors.New("the kernel refused a BPF LSM program at load (needs CONFIG_BPF_LSM)")
	rs, err := CompileFor([]Source{src("d.yaml", y)}, nil, Capabilities{BPFLSM: lsm})
	if err == nil || !strings.Contains(err.Error(), "d.yaml:6: rule D: action deny needs BPF LSM") || !strings.Contains(err.Error(), "CONFIG_BPF_LSM") {
		t.Errorf("deny without BPF LSM: %v", err)
	}
	if len(rs.List()) != 0 {
		t.Errorf("the deny rule was loaded anyway: %v", rs.List())
	}
	if _, err := CompileFor([]Source{src("d.yaml", y)}, nil, Capabilities{}); err == nil {
		t.Error("deny accepted, though loupe does not enforce it")
	}
}
