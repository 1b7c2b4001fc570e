package lab

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fullCLI returns a loupe binary with the events command: $LOUPE_BIN's
// when it has one, else a fresh build of ./cmd/loupe.
func fullCLI(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("LOUPE_BIN"); dir != "" {
		p := filepath.Join(dir, "loupe")
		if exec.Command(p, "events", "--help").Run() == nil {
			return p
		}
	}
	p := filepath.Join(t.TempDir(), "loupe")
	cmd := exec.Command("go", "build", "-o", p, "./cmd/loupe")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build loupe: %v\n%s", err, out)
	}
	return p
}

type eventLine struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	Rule      string `json:"rule"`
	Priority  string `json:"priority"`
	Output    string `json:"output"`
	File      string `json:"file"`
	Target    string `json:"file_target"`
	EventType string `json:"event_type"`
	Time      string `json:"time"`
	Process   struct {
		Name string   `json:"name"`
		Argv []string `json:"argv"`
	} `json:"process"`
}

// The "done when", on a live two-node lab with the default rules
// and a rules dir holding a Falco rules file and a bad file: a shell that
// reads /etc/shadow in x/a gives one shell event and one sensitive-file
// event of x/a, seen through the relay within a second; in x/b, of x/b.
// The bad file is refused with its file and line and the rest keep running.
func TestPrivilegedLabSecurityEvents(t *testing.T) {
	tl := newTestLab(t)
	cli := fullCLI(t)
	rules := t.TempDir()
	watched := t.TempDir()
	falco, err := os.ReadFile("../secevents/testdata/falco_subset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string]string{
		"falco.yaml":  string(falco),
		"zz-bad.yaml": "- rule: Bad\n  desc: d\n  condition: proc.name = sh and proc.tty != 0\n  output: o\n  priority: NOTICE\n",
		"watched.yaml": "- rule: Modify watched dir\n  desc: d\n  condition: evt.type in (rename, renameat, renameat2, unlink, unlinkat, chmod, fchmodat) and " +
			"(fs.path.name startswith " + watched + "/ or fs.path.source startswith " + watched + "/)\n  output: modified %fs.path.name %fs.path.target\n  priority: WARNING\n",
	} {
		if err := os.WriteFile(filepath.Join(rules, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tl.up("--nodes", "2", "-f", "../examples/netpol-model.yaml", "--rules-dir", rules)
	relay := tl.status().RelayAddress
	if relay == "" {
		t.Fatal("no relay address")
	}

	events := func() []eventLine {
		out, err := exec.Command(cli, "events", "--server", relay, "--since", "1m", "-o", "json").Output()
		if err != nil {
			t.Fatalf("loupe events: %v", err)
		}
		var evs []eventLine
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var raw map[string]any
			if err := json.Unmarshal(sc.Bytes(), &raw); err != nil {
				t.Fatalf("line %q: %v", sc.Text(), err)
			}
			if _, lost := raw["lost_events"]; lost {
				continue
			}
			for _, k := range []string{"namespace", "pod", "rule", "priority", "output"} {
				if _, ok := raw[k].(string); !ok {
					t.Errorf("line %q: %s is not a top-level string", sc.Text(), k)
				}
			}
			var e eventLine
			_ = json.Unmarshal(sc.Bytes(), &e)
			evs = append(evs, e)
		}
		return evs
	}
	count := func(evs []eventLine, pod, rule string, since time.Time) int {
		n := 0
		for _, e := range evs {
			ts, _ := time.Parse(time.RFC3339Nano, e.Time)
			if e.Namespace == "x" && e.Pod == pod && e.Rule == rule && !ts.Before(since) {
				n++
			}
		}
		return n
	}

	// A follower through the relay, started before the commands.
	follow := exec.Command(cli, "events", "--server", relay, "-f", "-o", "json", "--namespace", "x")
	fout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followed := make(chan []eventLine, 1)
	go func() {
		var evs []eventLine
		sc := bufio.NewScanner(fout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e eventLine
			if json.Unmarshal(sc.Bytes(), &e) == nil && e.Rule != "" {
				evs = append(evs, e)
			}
		}
		followed <- evs
	}()
	followStart := time.Now()
	time.Sleep(500 * time.Millisecond) // the follower is connected

	for _, pod := range []string{"a", "b"} {
		start := time.Now()
		tl.mustRun("exec", "x/"+pod, "--", "sh", "-c", "cat /etc/shadow >/dev/null")
		done := time.Now()
		var evs []eventLine
		for {
			evs = events()
			if count(evs, pod, "Shell in container", start) >= 1 && count(evs, pod, "Read sensitive file", start) >= 1 {
				break
			}
			if time.Since(done) > time.Second {
				t.Fatalf("x/%s: events not at the relay within 1s of the command: %+v\n%s", pod, evs, tl.logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("x/%s: both events at the relay %v after the command", pod, time.Since(done).Round(time.Millisecond))
		// Give a duplicate (from another agent) time to arrive, then count.
		time.Sleep(500 * time.Millisecond)
		evs = events()
		if n := count(evs, pod, "Shell in container", start); n != 1 {
			t.Errorf("x/%s: %d shell events, want 1", pod, n)
		}
		if n := count(evs, pod, "Read sensitive file", start); n != 1 {
			t.Errorf("x/%s: %d sensitive-file events, want 1", pod, n)
		}
		other := map[string]string{"a": "b", "b": "a"}[pod]
		if n := count(evs, other, "Shell in container", start) + count(evs, other, "Read sensitive file", start); n != 0 {
			t.Errorf("x/%s's command attributed to x/%s %d times", pod, other, n)
		}
		for _, e := range evs {
			if e.Pod == pod && e.Rule == "Read sensitive file" {
				if e.File != "/etc/shadow" || e.Priority != "Warning" || e.Process.Name != "cat" || !strings.Contains(e.Output, "file=/etc/shadow") {
					t.Errorf("sensitive-file event %+v", e)
				}
			}
			if e.Pod == pod && e.Rule == "Shell in container" && (e.Priority != "Notice" || e.Process.Name != "sh" ||
				strings.Join(e.Process.Argv, " ") != "sh -c cat /etc/shadow >/dev/null") {
				t.Errorf("shell event %+v", e)
			}
		}
	}
	_ = follow.Process.Kill()
	_ = follow.Wait()
	fevs := <-followed
	for _, pod := range []string{"a", "b"} {
		if n := count(fevs, pod, "Shell in container", followStart); n != 1 {
			t.Errorf("follow: x/%s: %d shell events, want 1: %+v", pod, n, fevs)
		}
		if n := count(fevs, pod, "Read sensitive file", followStart); n != 1 {
			t.Errorf("follow: x/%s: %d sensitive-file events, want 1", pod, n)
		}
	}
	// A path relative to the cwd is resolved in the kernel: attributed to
	// x/a once, as /etc/shadow.
	start := time.Now()
	tl.mustRun("exec", "x/a", "--", "sh", "-c", "cd /etc && cat shadow >/dev/null")
	relative := func(evs []eventLine) int { return count(evs, "a", "Read sensitive file", start) }
	waitFor := func(what string, done func([]eventLine) bool) []eventLine {
		deadline := time.Now().Add(2 * time.Second)
		for {
			evs := events()
			if done(evs) {
				time.Sleep(500 * time.Millisecond) // a duplicate would arrive
				return events()
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not at the relay: %+v\n%s", what, evs, tl.logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	evs := waitFor("cd /etc && cat shadow", func(evs []eventLine) bool { return relative(evs) >= 1 })
	if n := relative(evs); n != 1 {
		t.Errorf("cd /etc && cat shadow: %d sensitive-file events, want 1", n)
	}
	for _, e := range evs {
		if e.Pod == "a" && e.Rule == "Read sensitive file" && eventAfter(e, start) && e.File != "/etc/shadow" {
			t.Errorf("cd /etc && cat shadow: file %q", e.File)
		}
	}

	// A rename, a chmod and an unlink under a watched folder, with
	// relative paths, in x/b: one event each, of x/b.
	start = time.Now()
	tl.mustRun("exec", "x/b", "--", "sh", "-c", "cd "+watched+" && touch a && mv a b && chmod 600 b && rm b")
	ops := func(evs []eventLine) map[string]eventLine {
		out := map[string]eventLine{}
		for _, e := range evs {
			ts, _ := time.Parse(time.RFC3339Nano, e.Time)
			if e.Rule == "Modify watched dir" && !ts.Before(start) {
				key := e.Namespace + "/" + e.Pod + " " + e.EventType + " " + e.File
				if _, dup := out[key]; dup {
					t.Errorf("%s reported twice", key)
				}
				out[key] = e
			}
		}
		return out
	}
	evs = waitFor("file operations", func(evs []eventLine) bool { return len(ops(evs)) >= 3 })
	got := ops(evs)
	if len(got) != 3 {
		t.Errorf("file operations: %d events, want 3: %+v", len(got), got)
	}
	for _, k := range []string{"renameat2 " + watched + "/a", "fchmodat " + watched + "/b", "unlinkat " + watched + "/b"} {
		e, ok := got["x/b "+k]
		if !ok {
			t.Errorf("no event x/b %s: %+v", k, got)
			continue
		}
		if strings.HasPrefix(k, "renameat2") && e.Target != watched+"/b" {
			t.Errorf("rename target %q", e.Target)
		}
	}

	logs := tl.logs()
	if !strings.Contains(logs, `zz-bad.yaml:3: rule Bad: unsupported field \"proc.tty\"`) && !strings.Contains(logs, `zz-bad.yaml:3: rule Bad: unsupported field "proc.tty"`) {
		t.Errorf("the bad rules file was not refused with its file and line:\n%s", logs)
	}
}

func eventAfter(e eventLine, t time.Time) bool {
	ts, err := time.Parse(time.RFC3339Nano, e.Time)
	return err == nil && !ts.Before(t)
}
