package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/testtools"
)

// TestPrivilegedPolicyVerdictFlows is the policy-verdict bug as a user met
// it: on a 2-node lab with an ingress policy in x, an allowed connection
// must show through the relay, in the stock hubble CLI and in loupe's, as
// a policy-verdict flow with the policy that allowed it, and a denied one
// as a policy drop.
func TestPrivilegedPolicyVerdictFlows(t *testing.T) {
	hubbleBin := testtools.Hubble(t, "hubble")
	l := newPolicyLab(t)
	l.must("apply", "-f", l.file("allow-x.yaml", `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-x, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {}}]
    ports: [{protocol: TCP, port: 80}]
`))
	if _, errs, code := l.run("probe", "--from", "x/a", "--to", "x/b", "--port", "80", "--protocol", "TCP", "--timeout", "5s"); code != 0 {
		t.Fatalf("x/a -> x/b:80 refused: %s", errs)
	}
	if _, _, code := l.run("probe", "--from", "y/b", "--to", "x/a", "--port", "80", "--protocol", "TCP", "--timeout", "2s"); code == 0 {
		t.Fatal("y/b -> x/a:80 allowed")
	}
	var st struct {
		RelayAddress string `json:"relayAddress"`
	}
	if err := json.Unmarshal([]byte(l.must("status", "-o", "json")), &st); err != nil || st.RelayAddress == "" {
		t.Fatalf("lab status: %v %q", err, st.RelayAddress)
	}
	observe := func(bin string, args ...string) (string, error) {
		full := append([]string{"observe", "--server", st.RelayAddress, "--last", "2000", "--color", "never"}, args...)
		cmd := exec.Command(bin, full...)
		home := t.TempDir()
		cmd.Dir, cmd.Env = home, []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("%s %v: %w\n%s", filepath.Base(bin), args, err, errb.String())
		}
		return out.String(), nil
	}
	// awaitLine polls (flows reach the relay within its sort window) until
	// a line of the output has every part.
	awaitLine := func(bin string, args []string, parts ...string) {
		t.Helper()
		var out string
		deadline := time.Now().Add(20 * time.Second)
		for {
			var err error
			if out, err = observe(bin, args...); err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(out, "\n") {
				if containsAll(line, parts) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s %v: no line with %q:\n%s\n%s", filepath.Base(bin), args, parts, out, l.logs())
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	loupeBin := filepath.Join(l.bin, "loupe")
	verdicts := []string{"--type", "policy-verdict", "--print-policy-names"}
	for _, bin := range []string{hubbleBin, loupeBin} {
		awaitLine(bin, verdicts, "x/a:", "-> x/b:80", "policy-verdict:", "INGRESS ALLOWED BY allow-from-x (NetworkPolicy)")
		awaitLine(bin, []string{"--type", "drop"}, "y/b:", "x/a:80", "Policy denied DROPPED")
	}

	// -o json carries Cilium's policy-verdict type on every flow.
	out, err := observe(loupeBin, append(verdicts, "-o", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var r struct {
			Flow *struct {
				EventType struct {
					Type int `json:"type"`
				} `json:"event_type"`
			} `json:"flow"`
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("json line %q: %v", line, err)
		}
		if r.Flow == nil {
			continue
		}
		n++
		if r.Flow.EventType.Type != contract.MessageTypePolicyVerdict {
			t.Errorf("--type policy-verdict gave a flow of type %d: %s", r.Flow.EventType.Type, line)
		}
	}
	if n == 0 {
		t.Error("-o json printed no policy-verdict flow")
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
