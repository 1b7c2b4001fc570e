package lab

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The "done when" for actions, on a live two-node lab of the demo:
// a kill rule on reading /etc/shadow in pods labelled app=frontend makes
// `cat /etc/shadow` in demo/frontend exit 137 and print nothing of the
// file, while the same command in demo/api runs; the kill is reported
// through the relay with action "kill" and counted in
// loupe_security_events_total. A deny rule is refused at load with a
// message naming the missing kernel capability, and is not loaded.
func TestPrivilegedLabSecurityKill(t *testing.T) {
	tl := newTestLab(t)
	cli := fullCLI(t)
	rules := t.TempDir()
	kill, err := os.ReadFile("../examples/security/demo-rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	deny := "- rule: Deny shadow\n  desc: d\n  condition: evt.type in (open, openat, openat2) and fd.name = /etc/shadow and container.id != host\n  output: o\n  priority: ERROR\n  action: deny\n"
	for name, data := range map[string]string{"kill.yaml": string(kill), "zz-deny.yaml": deny} {
		if err := os.WriteFile(filepath.Join(rules, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tl.up("--nodes", "2", "-f", "../examples/demo.yaml", "--rules-dir", rules)
	st := tl.status()
	time.Sleep(time.Second) // the agents select the new pods (every 250ms)

	out, errs, code := tl.run("exec", "demo/frontend", "--", "cat", "/etc/shadow")
	if code != 137 {
		t.Errorf("cat /etc/shadow in demo/frontend: exit %d, want 137\nstderr: %s\n%s", code, errs, tl.logs())
	}
	if out != "" {
		t.Errorf("cat /etc/shadow in demo/frontend printed %d bytes of the file", len(out))
	}
	shadow, err := os.ReadFile("/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	out, errs, code = tl.run("exec", "demo/api", "--", "cat", "/etc/shadow")
	if code != 0 || out != string(shadow) {
		t.Errorf("cat /etc/shadow in demo/api: exit %d, %d bytes (want 0 and the file's %d)\nstderr: %s", code, len(out), len(shadow), errs)
	}
	// Another file in the selected pod is not the rule's.
	if _, errs, code = tl.run("exec", "demo/frontend", "--", "cat", "/etc/hostname"); code != 0 {
		t.Errorf("cat /etc/hostname in demo/frontend: exit %d: %s", code, errs)
	}

	// The kill, reported once through the relay, by the kill rule.
	var got []json.RawMessage
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		got = relayEvents(t, cli, st.RelayAddress, "--since", "1m", "--rule", "Kill shadow readers in frontend")
		if len(got) > 0 {
			time.Sleep(500 * time.Millisecond) // room for a duplicate
			continue
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(got) != 1 {
		t.Fatalf("kill events at the relay: %v, want 1\n%s", got, tl.logs())
	}
	var e struct{ Namespace, Pod, Action, Priority, File string }
	if err := json.Unmarshal(got[0], &e); err != nil {
		t.Fatal(err)
	}
	if e.Namespace != "demo" || e.Pod != "frontend" || e.Action != "kill" || e.Priority != "Critical" || e.File != "/etc/shadow" {
		t.Errorf("kill event %+v", e)
	}

	// Counted by rule and priority on the frontend's node.
	var node string
	for _, p := range st.Pods {
		if p.Namespace == "demo" && p.Name == "frontend" {
			node = p.Node
		}
	}
	want := `loupe_security_events_total{priority="Critical",rule="Kill shadow readers in frontend"} 1`
	found := false
	for _, n := range st.Nodes {
		resp, err := http.Get("http://" + n.MetricsAddress + "/metrics")
		if err != nil {
			t.Fatalf("metrics of %s: %v", n.Name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(b), want) {
			found = true
			if !strings.Contains(string(b), "\nloupe_security_kills_total 1\n") {
				t.Errorf("%s does not count one kill in loupe_security_kills_total", n.Name)
			}
			if n.Name != node {
				t.Errorf("the kill counted on %s, the pod runs on %s", n.Name, node)
			}
		}
	}
	if !found {
		t.Errorf("no agent serves %s", want)
	}

	logs := tl.logs()
	for _, s := range []string{"zz-deny.yaml:6: rule Deny shadow: action deny needs BPF LSM", "CONFIG_BPF_LSM"} {
		if !strings.Contains(logs, s) && !strings.Contains(logs, fmt.Sprintf("%q", s)[1:len(fmt.Sprintf("%q", s))-1]) {
			t.Errorf("the deny rule was not refused naming %q:\n%s", s, logs)
		}
	}
}

// relayEvents runs `loupe events -o json` against the relay and returns
// its event lines (not the lost-event notes).
func relayEvents(t *testing.T, cli, relay string, args ...string) []json.RawMessage {
	t.Helper()
	b, err := exec.Command(cli, append([]string{"events", "--server", relay, "-o", "json"}, args...)...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("loupe events: %v: %s", err, stderr)
	}
	var out []json.RawMessage
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]json.RawMessage
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["rule"] != nil {
			out = append(out, append(json.RawMessage(nil), sc.Bytes()...))
		}
	}
	return out
}
