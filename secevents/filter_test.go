package secevents

import (
	"os"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/datapath"
)

// kernelPasses is what secev.c decides for an event under filter f (the
// privileged datapath tests hold the C to the same decisions).
func kernelPasses(f datapath.SecurityFilter, e *Event) bool {
	under := func(p string, prefixes []string) bool {
		if strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") {
			return true // not canonical: passed for user space to clean
		}
		for _, q := range prefixes {
			if strings.HasPrefix(p, q[:min(len(q), datapath.SecevLPMBytes)]) {
				return true
			}
		}
		return false
	}
	file := func(all bool, prefixes []string, paths ...string) bool {
		if all || (e.Relative && f.Relative) {
			return true
		}
		return !e.Relative && slices.ContainsFunc(paths, func(p string) bool { return p != "" && under(p, prefixes) })
	}
	switch {
	case e.Type == "execve":
		return f.AllExecs || slices.Contains(f.ExecNames, commOf(e.Name))
	case e.Type == "procexit":
		return f.Exits
	case isOpen(e):
		return file(f.AllOpens, f.Prefixes, e.File)
	case slices.Contains(renameTypes, e.Type):
		return file(f.Renames.All, f.Renames.Prefixes, e.File, e.File2)
	case slices.Contains(unlinkTypes, e.Type):
		return file(f.Unlinks.All, f.Unlinks.Prefixes, e.File)
	case slices.Contains(chmodTypes, e.Type):
		return file(f.Chmods.All, f.Chmods.Prefixes, e.File)
	}
	return true
}

// widenEvents are events of every kind, on paths and names the seeds'
// rules name and others.
func widenEvents() []*Event {
	var out []*Event
	paths := []string{"/etc/shadow", "/etc/sudoers.d/x", "/usr/bin/ls", "/usr/local/bin/x", "/sbin/d", "/tmp/a", "/srv/x",
		"/root/.ssh/id", "/etc", "/", "relative/x"}
	for _, p := range paths {
		for _, typ := range slices.Concat(openTypes, renameTypes, unlinkTypes, chmodTypes) {
			for _, mode := range []uint32{0o644, 0o4755} {
				e := fileOp(typ, p, "", mode)
				e.Relative = !strings.HasPrefix(p, "/")
				if isOpen(e) {
					e.Flags, e.Ret = unix.O_WRONLY, 3
				}
				out = append(out, e)
				if slices.Contains(renameTypes, typ) {
					out = append(out, fileOp(typ, "/tmp/from", p, 0))
				}
			}
		}
	}
	for _, n := range []string{"sh", "bash", "apt-get", "cat", "dpkg-preconfigure"} {
		e := shellExec("x", "a")
		e.Name = n
		out = append(out, e)
	}
	return append(out, &Event{Type: "procexit", Name: "sh", ContainerID: "x"})
}

// The kernel filter derived from rules only widens: no event a rule
// matches is kept in the kernel. Checked on the default rules, Falco's
// subset, and rules the fuzzer makes up.
func FuzzKernelFilterWidens(f *testing.F) {
	b, err := os.ReadFile("testdata/falco_subset.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(string(defaultRules))
	f.Add(string(b))
	for _, c := range []string{`evt.type = unlinkat and evt.arg.name startswith /srv/`, `fs.path.target startswith /usr/ or proc.name = cat`,
		`fd.directory = /etc and not evt.type = open`, `evt.arg.newpath glob "/usr/*/ls"`, `fd.name pmatch (/etc, /root)`,
		`chmod_any and evt.arg.mode contains S_ISUID`, `fs.path.name in (/, /etc)`, `fd.name = relative/x`} {
		f.Add("- macro: chmod_any\n  condition: evt.type in (chmod, fchmod, fchmodat, fchmodat2)\n- rule: r\n  condition: '" +
			strings.ReplaceAll(c, "'", "''") + "'\n  output: o\n  priority: INFO\n")
	}
	events := widenEvents()
	f.Fuzz(func(t *testing.T, rules string) {
		rs, err := Compile([]Source{{Name: "fuzz.yaml", Data: []byte(rules)}}, nil)
		if err != nil {
			return
		}
		kf := rs.KernelFilter()
		en := NewEngine(rs)
		for _, e := range events {
			if m, ok := en.Match(e); ok && !kernelPasses(kf, e) {
				t.Fatalf("rule %q matches %s %s -> %s (%s), which the kernel filter %+v keeps in the kernel", m.Rule.Name, e.Type, e.File, e.File2, e.Name, kf)
			}
		}
	})
}
