package secevents

import (
	"strings"
	"testing"
)

// The condition parser never panics; what it accepts compiles or is
// refused with an error, and the kernel filter derives from it.
func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{`proc.name in (sh, bash) and not fd.name startswith /etc`, `(evt.type=execve and evt.dir=<)`,
		`k8s.pod.label[app] = "a b"`, `proc.name!="<NA>"`, `((((a`, `x exists`, `fd.name glob "[a-"`,
		`evt.type = connect and fd.snet in (10.0.0.0/8, ::1) and net.distinct_ports >= 20`, `dns.query in (a.b) and fd.snet != 1.2.3.4/33`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseCondition(s)
		if err != nil {
			return
		}
		en := &env{lists: map[string][]string{}, macros: map[string]*node{}}
		x, err := en.expand(n, 0)
		if err != nil {
			return
		}
		m, err := compile(x)
		if err != nil {
			return
		}
		m(shellExec("x", "a"))
		m(shadowOpen())
		m(netEv("dns", "10.0.0.1", 53, "a.b"))
		analyze(x)
		_, _ = compileKill(x)
	})
}

// A rules file never crashes the loader: it loads, or is refused with its
// name in the error.
func FuzzCompileRules(f *testing.F) {
	f.Add(string(defaultRules))
	f.Add("- rule: r\n  condition: proc.name = sh\n  output: o %proc.name\n  priority: INFO\n")
	f.Add("- list: l\n  items: [a, '\"b\"']\n  append: true\n")
	f.Add("- macro: m\n  condition: m\n- rule: r\n  condition: m\n  output: o\n  priority: INFO\n")
	f.Add("- rule: k\n  desc: d\n  condition: evt.type in (open, openat, openat2) and fd.name pmatch (/etc) and k8s.pod.label.app = a\n  output: o\n  priority: INFO\n  action: kill\n")
	f.Add("- rule: n\n  desc: d\n  condition: evt.type = connect and fd.snet in (10.0.0.0/8)\n  output: o %fd.sip\n  priority: INFO\n  source: network\n")
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := Compile([]Source{{Name: "fuzz.yaml", Data: []byte(s)}}, nil)
		if err != nil && !strings.Contains(err.Error(), "fuzz.yaml") {
			t.Fatalf("error without the file's name: %v", err)
		}
		if rs == nil {
			t.Fatal("nil rules")
		}
		en := NewEngine(rs)
		en.Match(shellExec("x", "a"))
		en.Match(shadowOpen())
		en.MatchNetwork(netEv("connect", "10.0.0.1", 80, ""), NewRefire())
		rs.KernelFilter()
		if err := rs.KillSet().Validate(); err != nil {
			t.Fatalf("a compiled kill rule the kernel refuses: %v", err)
		}
	})
}
