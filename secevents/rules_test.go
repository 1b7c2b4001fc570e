package secevents

import (
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/datapath"
)

func mustCompile(t *testing.T, srcs ...Source) *Rules {
	t.Helper()
	rs, err := Compile(srcs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func src(name, yaml string) Source { return Source{Name: name, Data: []byte(yaml)} }

func shellExec(ns, pod string) *Event {
	return &Event{Num: 1, Type: "execve", Name: "sh", PName: "nsenter", ExePath: "/usr/bin/sh", Argv: []string{"sh", "-c", "cat /etc/shadow"},
		PID: 10, PPID: 9, Namespace: ns, Pod: pod, ContainerID: "lab-x-a", Labels: map[string]string{"app": "web"}}
}

func shadowOpen() *Event {
	return &Event{Num: 2, Type: "openat", Name: "cat", PName: "sh", Argv: []string{"cat", "/etc/shadow"}, File: "/etc/shadow",
		Flags: unix.O_RDONLY, Ret: 3, Namespace: "x", Pod: "a", ContainerID: "lab-x-a"}
}

// fileOp is a rename (to file2), unlink or chmod (to mode) in x/a.
func fileOp(typ, file, file2 string, mode uint32) *Event {
	return &Event{Num: 3, Type: typ, Name: "mv", PName: "sh", Argv: []string{"mv", file, file2}, File: file, File2: file2,
		Mode: mode, Dirfd: -100, Namespace: "x", Pod: "a", ContainerID: "lab-x-a"}
}

func TestDefaultRules(t *testing.T) {
	en := NewEngine(mustCompile(t, DefaultRules()))
	cases := []struct {
		name string
		ev   *Event
		rule string
	}{
		{"shell in a pod", shellExec("x", "a"), "Shell in container"},
		{"shell on the node", func() *Event { e := shellExec("", ""); e.ContainerID = HostContainerID; return e }(), ""},
		{"shadow read", shadowOpen(), "Read sensitive file"},
		{"shadow open failed", func() *Event { e := shadowOpen(); e.Ret = -int32(unix.EACCES); return e }(), ""},
		{"sudoers.d read", func() *Event { e := shadowOpen(); e.File = "/etc/sudoers.d/x"; return e }(), "Read sensitive file"},
		{"hostname read", func() *Event { e := shadowOpen(); e.File = "/etc/hostname"; return e }(), ""},
		{"write below /usr/bin", func() *Event {
			e := shadowOpen()
			e.File, e.Flags = "/usr/bin/evil", unix.O_WRONLY|unix.O_CREAT
			return e
		}(), "Write below binary dir"},
		{"read below /usr/bin", func() *Event { e := shadowOpen(); e.File = "/usr/bin/ls"; return e }(), ""},
		{"apt-get in a pod", func() *Event { e := shellExec("x", "a"); e.Name = "apt-get"; return e }(), "Package management process launched in container"},
		{"rename into /usr/bin", fileOp("renameat2", "/tmp/evil", "/usr/bin/ls", 0), "Modify binary dirs"},
		{"rename out of /sbin", fileOp("rename", "/sbin/x", "/tmp/x", 0), "Modify binary dirs"},
		{"rename in /tmp", fileOp("rename", "/tmp/a", "/tmp/b", 0), ""},
		{"unlink below /usr/local/bin", fileOp("unlinkat", "/usr/local/bin/x", "", 0), "Modify binary dirs"},
		{"rmdir /tmp/d", fileOp("rmdir", "/tmp/d", "", 0), ""},
		{"chmod below /usr/bin", fileOp("fchmodat", "/usr/bin/x", "", 0o755), "Modify binary dirs"},
		{"setuid in a pod", fileOp("fchmodat", "/tmp/x", "", 0o4755), "Set Setuid or Setgid bit"},
		{"setgid by fchmod", fileOp("fchmod", "/tmp/x", "", 0o2755), "Set Setuid or Setgid bit"},
		{"plain chmod in a pod", fileOp("chmod", "/tmp/x", "", 0o755), ""},
		{"setuid on the node", func() *Event { e := fileOp("chmod", "/tmp/x", "", 0o4755); e.ContainerID = HostContainerID; return e }(), ""},
	}
	for _, c := range cases {
		m, ok := en.Match(c.ev)
		got := ""
		if ok {
			got = m.Rule.Name
		}
		if got != c.rule {
			t.Errorf("%s: rule %q, want %q", c.name, got, c.rule)
		}
	}
	m, _ := en.Match(shellExec("x", "a"))
	if want := "A shell was spawned in a container (user.uid=0 pod=x/a container=lab-x-a shell=sh parent=nsenter cmdline=sh -c cat /etc/shadow exe=/usr/bin/sh)"; m.Output != want {
		t.Errorf("output\n got %s\nwant %s", m.Output, want)
	}
	if m.Rule.Priority != Notice {
		t.Errorf("priority %v", m.Rule.Priority)
	}
}

func TestOperators(t *testing.T) {
	ev := shellExec("x", "a")
	for cond, want := range map[string]bool{
		`proc.name = sh`:                                              true,
		`proc.name == sh and proc.pid = 10`:                           true,
		`proc.name != sh`:                                             false,
		`proc.name in (bash, sh)`:                                     true,
		`not proc.name in (bash, zsh)`:                                true,
		`proc.cmdline startswith "sh -c"`:                             true,
		`proc.exe endswith sh`:                                        true,
		`proc.cmdline contains shadow`:                                true,
		`proc.cmdline icontains SHADOW`:                               true,
		`proc.exepath pmatch (/usr/bin, /bin)`:                        true,
		`proc.exepath pmatch (/usr/b)`:                                false,
		`proc.exepath glob "/usr/*/s?"`:                               true,
		`user.uid < 1000 and user.uid >= 0`:                           true,
		`proc.ppid > 9`:                                               false,
		`k8s.pod.label.app = web`:                                     true,
		`k8s.pod.label[app] = web`:                                    true,
		`k8s.pod.label.missing exists`:                                false,
		`k8s.ns.name = x and k8s.pod.name = a`:                        true,
		`fd.name = /etc/shadow`:                                       false, // an exec has no fd
		`(proc.name = bash or proc.name = sh) and not (user.uid = 1)`: true,
		`evt.type = execve and evt.dir = <`:                           true,
		`container.id = lab-x-a`:                                      true,
	} {
		n, err := parseCondition(cond)
		if err != nil {
			t.Errorf("%s: %v", cond, err)
			continue
		}
		en := &env{lists: map[string][]string{}, macros: map[string]*node{}}
		x, err := en.expand(n, 0)
		if err != nil {
			t.Errorf("%s: %v", cond, err)
			continue
		}
		m, err := compile(x)
		if err != nil {
			t.Errorf("%s: %v", cond, err)
			continue
		}
		if got := m(ev); got != want {
			t.Errorf("%s = %v, want %v", cond, got, want)
		}
	}
}

// Refusals name the file, the line and what is wrong.
func TestRefusals(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"- rule: r\n  desc: d\n  condition: proc.name = sh and proc.tty != 0\n  output: o\n  priority: NOTICE\n", `f.yaml:3: rule r: unsupported field "proc.tty"`},
		{"- rule: r\n  desc: d\n  condition: proc.name = sh\n  output: o %user.name\n  priority: NOTICE\n", `f.yaml:4: rule r: unsupported field "user.name" in output`},
		{"- rule: r\n  condition: proc.name = sh\n  output: o\n  priority: LOUD\n", `f.yaml:4: rule r: unknown priority "LOUD"`},
		{"- rule: r\n  condition: proc.name = sh and\n  output: o\n  priority: INFO\n", `f.yaml:2: rule r: condition ends early`},
		{"- rule: r\n  condition: proc.name intersects (a)\n  output: o\n  priority: INFO\n", `f.yaml:2: rule r: unsupported operator "intersects"`},
		{"- rule: r\n  condition: nosuchmacro\n  output: o\n  priority: INFO\n", `f.yaml:2: rule r: undefined macro "nosuchmacro"`},
		{"- rule: r\n  condition: proc.name = sh\n  output: o\n  priority: INFO\n  exceptions:\n    - name: e\n", `f.yaml:6: rule r: exceptions are not supported`},
		{"- rule: r\n  condition: proc.name = sh\n  output: o\n  priority: INFO\n  colour: red\n", `f.yaml:5: unsupported key "colour" in a rule`},
		{"- list: l\n  items: [a\n", `f.yaml`},
		{"rule: r\n", `f.yaml:1: a rules file is a YAML list`},
		{"- macro: m\n  condition: (proc.name = a\n", `f.yaml:2: macro m: missing )`},
		{"- rule: r\n  condition: user.uid = abc\n  output: o\n  priority: INFO\n", `f.yaml:2: rule r: user.uid is a number, "abc" is not`},
		{"- list: l\n  items: [a]\n  append: true\n", `f.yaml:1: list l: append to a list not defined before`},
	} {
		_, err := Compile([]Source{src("f.yaml", c.yaml)}, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yaml, err, c.want)
		}
	}
}

// A rules file cut from Falco's own default rules loads unchanged; one
// that needs a field loupe lacks is refused, naming the field.
func TestFalcoRules(t *testing.T) {
	b, err := os.ReadFile("testdata/falco_subset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	rs := mustCompile(t, Source{Name: "falco_subset.yaml", Data: b})
	if len(rs.List()) != 2 || rs.List()[1].Name != "Read sensitive file untrusted" || rs.List()[1].Priority != Warning ||
		rs.List()[0].Name != "Modify binary dirs" {
		t.Fatalf("rules %+v", rs.List())
	}
	en := NewEngine(rs)
	if m, ok := en.Match(shadowOpen()); !ok || !strings.HasPrefix(m.Output, "Sensitive file opened for reading by non-trusted program (file=/etc/shadow evt_type=openat user_uid=0 process=cat") {
		t.Errorf("cat /etc/shadow: %v %q", ok, m.Output)
	}
	if m, ok := en.Match(fileOp("renameat2", "/tmp/x", "/usr/bin/x", 0)); !ok || m.Rule.Name != "Modify binary dirs" ||
		m.Output != "File below known binary directory renamed/removed (file=<NA> evt_type=renameat2 user_uid=0 process=mv proc_exepath=<NA> parent=sh command=mv /tmp/x /usr/bin/x)" {
		t.Errorf("rename into /usr/bin: %v %q", ok, m.Output)
	}
	for _, e := range []*Event{fileOp("unlink", "/usr/sbin/x", "", 0), fileOp("unlinkat", "/bin/x", "", 0), fileOp("rmdir", "/sbin/d", "", 0)} {
		if m, ok := en.Match(e); !ok || m.Rule.Name != "Modify binary dirs" {
			t.Errorf("%s %s: %v %v", e.Type, e.File, ok, m.Rule)
		}
	}
	if _, ok := en.Match(fileOp("unlinkat", "/usr/local/bin/x", "", 0)); ok {
		t.Error("unlink below /usr/local/bin matched Falco's rule, which does not list it")
	}
	trusted := shadowOpen()
	trusted.Name = "sshd"
	if _, ok := en.Match(trusted); ok {
		t.Error("sshd (read_sensitive_file_binaries) matched")
	}
	b, err = os.ReadFile("testdata/falco_unsupported.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Compile([]Source{{Name: "falco_unsupported.yaml", Data: b}}, nil)
	if err == nil || !strings.Contains(err.Error(), `falco_unsupported.yaml:28: rule Read new-process passwd copy: in macro proc_is_new: unsupported field "proc.duration"`) {
		t.Errorf("error %v", err)
	}
}

// A file that goes bad keeps its last good version; the others load.
func TestBadFileKeepsPrevious(t *testing.T) {
	good := src("a.yaml", "- rule: A\n  condition: proc.name = a\n  output: a\n  priority: INFO\n")
	other := src("b.yaml", "- rule: B\n  condition: proc.name = b\n  output: b\n  priority: INFO\n")
	prev := mustCompile(t, good, other)
	bad := src("a.yaml", "- rule: A\n  condition: proc.name = \n  output: a\n  priority: INFO\n")
	other2 := src("b.yaml", "- rule: B2\n  condition: proc.name = b\n  output: b\n  priority: INFO\n")
	rs, err := Compile([]Source{bad, other2}, prev)
	if err == nil || !strings.Contains(err.Error(), "a.yaml:2") {
		t.Fatalf("error %v", err)
	}
	var names []string
	for _, r := range rs.List() {
		names = append(names, r.Name)
	}
	if !slices.Equal(names, []string{"A", "B2"}) {
		t.Errorf("rules %v", names)
	}
	// Without a previous version, the bad file adds nothing.
	rs, _ = Compile([]Source{bad, other2}, nil)
	if len(rs.List()) != 1 {
		t.Errorf("rules %v", rs.List())
	}
}

// Append, override and enabled work as in Falco; later files see earlier
// lists and macros.
func TestAppendOverride(t *testing.T) {
	base := src("a.yaml", `
- list: shells
  items: [sh]
- macro: is_shell
  condition: proc.name in (shells)
- rule: Shell
  condition: is_shell
  output: shell %proc.name
  priority: WARNING
- rule: Off
  condition: proc.name = sh
  output: off
  priority: INFO
  enabled: false
`)
	local := src("b.yaml", `
- list: shells
  items: [bash]
  append: true
- rule: Shell
  condition: and not proc.pname = init
  append: true
- rule: Off
  enabled: true
`)
	rs := mustCompile(t, base, local)
	en := NewEngine(rs)
	e := shellExec("x", "a")
	e.Name = "bash"
	if m, ok := en.Match(e); !ok || m.Rule.Name != "Shell" || m.Output != "shell bash" {
		t.Errorf("bash: %v %+v", ok, m)
	}
	e.PName = "init"
	if m, ok := en.Match(e); ok {
		t.Errorf("appended condition ignored: %+v", m.Rule.Name)
	}
	if !rs.List()[1].Enabled {
		t.Error("enabled: true did not turn Off on")
	}
}

func TestKernelFilter(t *testing.T) {
	f := mustCompile(t, DefaultRules()).KernelFilter()
	if f.AllExecs || f.AllOpens || f.Exits || f.Relative {
		t.Errorf("default rules want everything: %+v", f)
	}
	for _, n := range []string{"sh", "bash", "apt-get", "dpkg-preconfigu"} {
		if !slices.Contains(f.ExecNames, n) {
			t.Errorf("exec names %v lack %s", f.ExecNames, n)
		}
	}
	for _, p := range []string{"/etc/shadow", "/etc/sudoers.d/", "/usr/bin/"} {
		if !slices.Contains(f.Prefixes, p) {
			t.Errorf("prefixes %v lack %s", f.Prefixes, p)
		}
	}
	for _, k := range []datapath.FileOpFilter{f.Renames, f.Unlinks} {
		if k.All || !slices.Contains(k.Prefixes, "/usr/bin") || !slices.Contains(k.Prefixes, "/sbin") || slices.Contains(k.Prefixes, "/etc/shadow") {
			t.Errorf("rename/unlink filter %+v", k)
		}
	}
	if !f.Chmods.All { // Set Setuid or Setgid bit: any path
		t.Errorf("chmod filter %+v", f.Chmods)
	}
	for cond, check := range map[string]func(f datapath.SecurityFilter) bool{
		`proc.name = sh`: func(f datapath.SecurityFilter) bool {
			return f.AllOpens && f.Exits && slices.Equal(f.ExecNames, []string{"sh"})
		},
		`evt.type = openat and fd.name endswith .key`: func(f datapath.SecurityFilter) bool {
			return f.AllOpens && !f.AllExecs && len(f.ExecNames) == 0 && !f.Exits
		},
		`evt.type = procexit`:                                      func(f datapath.SecurityFilter) bool { return f.Exits && !f.AllOpens && !f.AllExecs },
		`not proc.name = sh`:                                       func(f datapath.SecurityFilter) bool { return f.AllExecs && f.AllOpens },
		`fd.name startswith /etc or proc.name = x`:                 func(f datapath.SecurityFilter) bool { return f.AllOpens && slices.Equal(f.ExecNames, []string{"x"}) },
		`fd.name glob "/var/*.log" and evt.type in (open, openat)`: func(f datapath.SecurityFilter) bool { return slices.Equal(f.Prefixes, []string{"/var/"}) },
		`fd.name = secret`:                                         func(f datapath.SecurityFilter) bool { return f.Relative && len(f.Prefixes) == 0 },
		`evt.type = unlinkat and evt.arg.name startswith /srv/`: func(f datapath.SecurityFilter) bool {
			return slices.Equal(f.Unlinks.Prefixes, []string{"/srv/"}) && !f.Unlinks.All && !f.AllOpens && len(f.Prefixes) == 0 &&
				!f.Renames.All && len(f.Renames.Prefixes) == 0 && !f.Chmods.All && len(f.ExecNames) == 0
		},
		`fs.path.target startswith /x/ or fs.path.name = /y`: func(f datapath.SecurityFilter) bool {
			return slices.Equal(f.Renames.Prefixes, []string{"/x/"}) && slices.Equal(f.Unlinks.Prefixes, []string{"/y"}) &&
				slices.Equal(f.Chmods.Prefixes, []string{"/y"}) && slices.Equal(f.Prefixes, []string{"/y"}) && !f.AllExecs
		},
		`fd.name = /z`: func(f datapath.SecurityFilter) bool { // fchmod's fd
			return slices.Equal(f.Chmods.Prefixes, []string{"/z"}) && !f.Unlinks.All && len(f.Unlinks.Prefixes) == 0
		},
		`evt.type = chmod and evt.arg.mode contains S_ISUID`: func(f datapath.SecurityFilter) bool {
			return f.Chmods.All && !f.AllOpens && !f.Renames.All && !f.Unlinks.All
		},
		`proc.name = unattended-upgrade`: func(f datapath.SecurityFilter) bool {
			return slices.Equal(f.ExecNames, []string{"unattended-upg"}) || slices.Equal(f.ExecNames, []string{"unattended-upgr"})
		},
	} {
		rs := mustCompile(t, src("f.yaml", "- rule: r\n  condition: '"+strings.ReplaceAll(cond, "'", "''")+"'\n  output: o\n  priority: INFO\n"))
		if f := rs.KernelFilter(); !check(f) {
			t.Errorf("%s: filter %+v", cond, f)
		}
	}
}
