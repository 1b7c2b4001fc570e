package lab

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// examples/attack.sh against a live demo lab loaded with examples/security:
// each network rule fires exactly once, for demo/frontend (the attacker),
// on its scripted trigger; the process and file rules fire for
// demo/frontend too, and the kill rule reports a kill.
func TestPrivilegedLabAttackScript(t *testing.T) {
	tl := newTestLab(t)
	cli := fullCLI(t)
	rules, err := filepath.Abs("../examples/security")
	if err != nil {
		t.Fatal(err)
	}
	tl.up("--nodes", "2", "-f", "../examples/demo.yaml", "--rules-dir", rules)
	st := tl.status()
	time.Sleep(time.Second) // the agents know their pods
	start := time.Now()
	cmd := exec.Command("bash", "../examples/attack.sh")
	cmd.Env = append(os.Environ(), "LOUPE="+cli, "LAB_DIR="+tl.dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("attack.sh: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "exit status 137") {
		t.Errorf("attack.sh: cat /etc/shadow was not killed:\n%s", out)
	}
	time.Sleep(2 * time.Second) // the last events reach the relay

	count := map[string]int{}
	other := map[string]int{}
	for _, line := range relayEvents(t, cli, st.RelayAddress, "--since", "5m") {
		var e struct {
			Namespace, Pod, Rule, Action, Time string
			Network                            *struct {
				DestinationIP string `json:"destination_ip"`
				DNSQuery      string `json:"dns_query"`
			}
		}
		if json.Unmarshal(line, &e) != nil || e.Rule == "" {
			continue
		}
		ts, _ := time.Parse(time.RFC3339Nano, e.Time)
		if ts.Before(start.Add(-time.Second)) {
			continue
		}
		if e.Namespace == "demo" && e.Pod == "frontend" {
			count[e.Rule]++
			if e.Rule == "Kill shadow readers in frontend" && e.Action != "kill" {
				t.Errorf("kill event without action kill: %s", string(line))
			}
			if e.Rule == "DNS query for a suspicious domain" && (e.Network == nil || e.Network.DNSQuery != "pool.minexmr.com") {
				t.Errorf("dns event %s", string(line))
			}
		} else {
			other[e.Namespace+"/"+e.Pod+" "+e.Rule]++
			if e.Network != nil {
				t.Logf("network event of another pod: %s", string(line))
			}
		}
	}
	for _, r := range []string{"New outbound destination", "Port or host scan", "DNS query for a suspicious domain", "Unexpected connection to the API server"} {
		if count[r] != 1 {
			t.Errorf("network rule %q fired %d times for demo/frontend, want 1", r, count[r])
		}
	}
	for _, r := range []string{"Shell in container", "Read sensitive file", "Kill shadow readers in frontend", "Write below binary dir"} {
		if count[r] < 1 {
			t.Errorf("rule %q did not fire for demo/frontend", r)
		}
	}
	for k, n := range other {
		if strings.Contains(k, "outbound") || strings.Contains(k, "scan") || strings.Contains(k, "DNS") || strings.Contains(k, "API server") {
			t.Errorf("network rule fired for another pod: %s (%d)", k, n)
		}
	}
	if t.Failed() {
		t.Logf("events for demo/frontend: %v\nattack.sh:\n%s\n%s", count, out, tl.logs())
	}
}
