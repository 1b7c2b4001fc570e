package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loupe-project/loupe/lab"
	"github.com/loupe-project/loupe/otlp/otlptest"
)

// One agent of the lab, restarted with --otlp-endpoint, exports the flows
// its real datapath produces to a real OTLP receiver: a TCP connection
// allowed by a NetworkPolicy, a UDP datagram that policy drops, and one the
// kernel drops (no socket), each with the attributes docs/otlp.md names.
func TestPrivilegedOTLPExportFromAgent(t *testing.T) {
	c := needLab(t)
	l, err := lab.Load(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	names := c.nodeNames()
	src := c.podsOn(names[0])[0]
	dsts := c.podsOn(names[1])
	dst, other := dsts[0], dsts[1]

	r := otlptest.Start(t, net.JoinHostPort(l.BridgeIP().String(), "0"), nil)
	agentBin := filepath.Join(c.bin, "loupe-agent")
	ctx := context.Background()
	if err := l.RestartAgent(ctx, agentBin, dst.Node, "--otlp-endpoint", r.Addr(), "--otlp-insecure",
		"--otlp-batch-timeout", "100ms"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.RestartAgent(ctx, agentBin, dst.Node); err != nil {
			t.Errorf("restart the agent without OTLP: %v", err)
		}
	})

	// Ingress to dst: TCP 80 only.
	pol := fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: otlp-e2e, namespace: %q}
spec:
  podSelector: {matchLabels: {pod: %q}}
  policyTypes: [Ingress]
  ingress:
  - ports: [{port: 80, protocol: TCP}]
`, dst.Namespace, dst.Name)
	file := filepath.Join(t.TempDir(), "otlp-e2e.yaml")
	if err := os.WriteFile(file, []byte(pol), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustLab(t, "apply", "-f", file)
	t.Cleanup(func() {
		if _, errs, code := c.lab("delete", "-f", file); code != 0 {
			t.Errorf("delete the policy: %s", errs)
		}
	})

	find := func(match func(map[string]string) bool) map[string]string {
		for _, lr := range r.LogRecords() {
			if a := otlptest.Attrs(lr); match(a) {
				return a
			}
		}
		return nil
	}
	isFlow := func(dstIP, transport, port, verdict string) func(map[string]string) bool {
		return func(a map[string]string) bool {
			return a["source.address"] == src.IP && a["destination.address"] == dstIP && a["network.transport"] == transport &&
				a["destination.port"] == port && a["loupe.verdict"] == verdict
		}
	}
	allowed := isFlow(dst.IP, "tcp", "80", "FORWARDED")
	denied := isFlow(dst.IP, "udp", "81", "DROPPED")
	kernel := isFlow(other.IP, "udp", "9", "DROPPED")
	deadline := time.Now().Add(60 * time.Second)
	for find(allowed) == nil || find(denied) == nil || find(kernel) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("in 60 s the receiver got %d records, not all of: allowed %v, denied %v, kernel %v",
				len(r.LogRecords()), find(allowed) != nil, find(denied) != nil, find(kernel) != nil)
		}
		c.dial(t, "TCP", src, dst, 80)
		c.dial(t, "UDP", src, dst, 81)
		c.sendClosed(t, src, other)
		time.Sleep(500 * time.Millisecond)
	}

	a := find(allowed)
	for k, want := range map[string]string{
		"network.type": "ipv4", "k8s.node.name": dst.Node,
		"k8s.namespace.name": dst.Namespace, "k8s.pod.name": dst.Name,
		"k8s.src.namespace": src.Namespace, "k8s.src.name": src.Name,
		"k8s.dst.namespace": dst.Namespace, "k8s.dst.name": dst.Name,
		"loupe.traffic_direction": "INGRESS", "loupe.flow.count": "1",
	} {
		if a[k] != want {
			t.Errorf("allowed flow: %s = %q, want %q (%v)", k, a[k], want, a)
		}
	}
	if a["source.port"] == "" || a["source.port"] == "0" {
		t.Errorf("allowed flow: no source.port (%v)", a)
	}
	if !hasAllowedBy(r, src.IP, dst.IP, dst.Namespace+"/otlp-e2e") {
		t.Errorf("no allowed flow names the policy %s/otlp-e2e", dst.Namespace)
	}
	if d := find(denied); d["loupe.drop_reason"] != "POLICY_DENIED" || d["k8s.pod.name"] != dst.Name {
		t.Errorf("policy drop: %v", d)
	}
	k := find(kernel)
	if k["loupe.drop_reason"] != "SKB_DROP_REASON_NO_SOCKET" || k["loupe.kernel_drop.reason"] != "SKB_DROP_REASON_NO_SOCKET" ||
		k["k8s.pod.name"] != other.Name || k["k8s.namespace.name"] != other.Namespace {
		t.Errorf("kernel drop: %v", k)
	}
}

// hasAllowedBy: some TCP flow from src to dst names policy in
// loupe.policy.ingress_allowed_by (replies and later packets need not).
func hasAllowedBy(r *otlptest.Receiver, srcIP, dstIP, policy string) bool {
	for _, lr := range r.LogRecords() {
		a := otlptest.Attrs(lr)
		if a["source.address"] == srcIP && a["destination.address"] == dstIP &&
			strings.Contains(a["loupe.policy.ingress_allowed_by"], policy) {
			return true
		}
	}
	return false
}
