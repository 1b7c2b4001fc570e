package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/loupe-project/loupe/metadata"
)

// testCluster is the model on two nodes with fixed addresses.
type testCluster struct {
	snap *metadata.Snapshot
	ips  map[string]string
}

const testCIDR16 = "10.0.0.0/16"

func newTestCluster(t testing.TB, extra string) *testCluster {
	t.Helper()
	snap := &metadata.Snapshot{Generation: "1"}
	if _, err := metadata.ParseManifests([]byte(modelYAML()), snap); err != nil {
		t.Fatal(err)
	}
	c := &testCluster{snap: snap, ips: map[string]string{}}
	for i, p := range snap.Pods {
		node := i%2 + 1
		ip := fmt.Sprintf("10.0.%d.%d", node, 10+i)
		p.Spec.NodeName = fmt.Sprintf("node%d", node)
		p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: fmt.Sprintf("172.30.0.%d", 10+node)}
		c.ips[p.Namespace+"/"+p.Name] = ip
	}
	for n := 1; n <= 2; n++ {
		node := &corev1.Node{}
		node.Name = fmt.Sprintf("node%d", n)
		node.Spec.PodCIDR = fmt.Sprintf("10.0.%d.0/24", n)
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.30.0.%d", 10+n)}}
		snap.Nodes = append(snap.Nodes, node)
	}
	if extra != "" {
		c.apply(t, extra)
	}
	return c
}

// apply adds policies and applies label changes of Namespace/Pod documents.
func (c *testCluster) apply(t testing.TB, docs string) {
	t.Helper()
	var in metadata.Snapshot
	if _, err := metadata.ParseManifests([]byte(docs), &in); err != nil {
		t.Fatal(err)
	}
	for _, ns := range in.Namespaces {
		for _, have := range c.snap.Namespaces {
			if have.Name == ns.Name {
				have.Labels = ns.Labels
			}
		}
	}
	for _, p := range in.Pods {
		for _, have := range c.snap.Pods {
			if have.Namespace == p.Namespace && have.Name == p.Name {
				have.Labels = p.Labels
			}
		}
	}
	c.snap.NetworkPolicies = append(c.snap.NetworkPolicies, in.NetworkPolicies...)
}

func (c *testCluster) ip(pod string) string { return c.ips[pod] }

// modelTable evaluates every cell with the model.
func modelTable(t testing.TB, m *Model) map[cell]bool {
	t.Helper()
	got := map[cell]bool{}
	for _, from := range modelPods() {
		for _, to := range modelPods() {
			fns, fname, _ := strings.Cut(from, "/")
			tns, tname, _ := strings.Cut(to, "/")
			src, err := m.PodEndpoint(fns, fname)
			if err != nil {
				t.Fatal(err)
			}
			dst, err := m.PodEndpoint(tns, tname)
			if err != nil {
				t.Fatal(err)
			}
			for _, pp := range modelPorts {
				proto, _ := ParseProto(pp.proto)
				got[cell{from, to, pp}] = m.Allowed(src, dst, uint16(pp.port), proto).Allowed
			}
		}
	}
	return got
}

func TestModelScenarios(t *testing.T) {
	if len(scenarios) < 25 {
		t.Fatalf("only %d scenarios", len(scenarios))
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			c := newTestCluster(t, "")
			c.apply(t, sc.policies(c.ip, testCIDR16)+sc.mutate)
			m := NewModel(c.snap)
			if len(m.Errors) > 0 {
				t.Fatalf("policy errors: %v", m.Errors)
			}
			if d := diffTables(sc.expect, modelTable(t, m)); d != "" {
				t.Errorf("model disagrees with the expected table:\n%s", d)
			}
		})
	}
}

// The explanation names the deciding policies and rules.
func TestModelDecisionReasons(t *testing.T) {
	c := newTestCluster(t, np("x", "y-on-81", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 81, protocol: TCP}`)+np("x", "deny-egress-b", `podSelector: {matchLabels: {pod: b}}
policyTypes: [Egress]`))
	m := NewModel(c.snap)
	ep := func(ns, name string) Endpoint {
		e, err := m.PodEndpoint(ns, name)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	d := m.Allowed(ep("y", "c"), ep("x", "a"), 81, TCP)
	if !d.Allowed || len(d.Policies) != 1 || d.Policies[0].Name != "y-on-81" ||
		len(d.Ingress.AllowedBy) != 1 || d.Ingress.AllowedBy[0].Rule != "spec.ingress[0]" || d.Egress.Enforced {
		t.Errorf("allowed decision: %+v", d)
	}
	d = m.Allowed(ep("y", "c"), ep("x", "a"), 80, TCP)
	if d.Allowed || len(d.Policies) != 1 || d.Policies[0].Name != "y-on-81" ||
		!strings.Contains(d.Reason, "no rule allows it: default deny from x/y-on-81") {
		t.Errorf("denied decision: %+v", d)
	}
	d = m.Allowed(ep("x", "b"), ep("x", "a"), 81, TCP)
	if d.Allowed || d.Egress.Allowed || d.Ingress.Allowed || len(d.Policies) != 2 {
		t.Errorf("denied both ways: %+v", d)
	}
	// Self and the own node always pass; an external address only by ipBlock.
	if d := m.Allowed(ep("x", "a"), ep("x", "a"), 80, TCP); !d.Allowed || !strings.Contains(d.Reason, "loopback") {
		t.Errorf("loopback: %+v", d)
	}
	nodeIP := map[string]string{"node1": "172.30.0.11", "node2": "172.30.0.12"}
	otherIP := map[string]string{"node1": "172.30.0.12", "node2": "172.30.0.11"}
	for _, pod := range []string{"a", "b"} {
		e := ep("x", pod)
		own := Endpoint{IP: netip.MustParseAddr(nodeIP[e.Pod.Spec.NodeName])}
		other := Endpoint{IP: netip.MustParseAddr(otherIP[e.Pod.Spec.NodeName])}
		if d := m.Allowed(own, e, 80, TCP); !d.Allowed {
			t.Errorf("own node -> %s: %+v", e, d)
		}
		if d := m.Allowed(e, own, 80, TCP); !d.Allowed {
			t.Errorf("%s -> own node: %+v", e, d)
		}
		// x/a is isolated for ingress on 80, x/b for egress.
		if d := m.Allowed(other, e, 80, TCP); d.Allowed != (pod == "b") {
			t.Errorf("other node -> %s: %+v", e, d)
		}
		if d := m.Allowed(e, other, 80, TCP); d.Allowed != (pod == "a") {
			t.Errorf("%s -> other node: %+v", e, d)
		}
	}
}

func TestParsePolicyErrors(t *testing.T) {
	cases := map[string]struct{ spec, field string }{
		"unknown protocol": {`podSelector: {}
ingress:
- ports:
  - {port: 80, protocol: ICMP}`, "spec.ingress[0].ports[0].protocol"},
		"bad cidr": {`podSelector: {}
egress:
- to:
  - ipBlock: {cidr: 10.0.0.0/33}`, "spec.egress[0].to[0].ipBlock.cidr"},
		"except outside": {`podSelector: {}
egress:
- to:
  - ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}`, "spec.egress[0].to[0].ipBlock.except[0]"},
		"endPort without port": {`podSelector: {}
ingress:
- ports:
  - {endPort: 90}`, "spec.ingress[0].ports[0].endPort"},
		"endPort below port": {`podSelector: {}
ingress:
- ports:
  - {port: 90, endPort: 80}`, "spec.ingress[0].ports[0].endPort"},
		"bad operator": {`podSelector:
  matchExpressions: [{key: a, operator: Near}]`, "spec.podSelector.matchExpressions[0].operator"},
		"bad policy type": {`podSelector: {}
policyTypes: [Sideways]`, "spec.policyTypes[0]"},
		"empty peer": {`podSelector: {}
ingress:
- from:
  - {}`, "spec.ingress[0].from[0]"},
	}
	for name, c := range cases {
		var s metadata.Snapshot
		if _, err := metadata.ParseManifests([]byte(np("x", "bad", c.spec)), &s); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		_, err := ParsePolicy(s.NetworkPolicies[0])
		var fe *InvalidPolicyError
		if !errors.As(err, &fe) || fe.Errors[0].Field != c.field || fe.Ref.Namespace != "x" || fe.Ref.Name != "bad" {
			t.Errorf("%s: error %v, want field %s", name, err, c.field)
		}
	}
	// A bad policy in a snapshot is reported, and kept fail-closed.
	snap := &metadata.Snapshot{NetworkPolicies: []*networkingv1.NetworkPolicy{{}}}
	if m := NewModel(snap); len(m.Errors) != 1 || len(m.Policies) != 1 || m.Policies[0].Invalid == nil {
		t.Errorf("model of a bad policy: %d errors, %d policies", len(m.Errors), len(m.Policies))
	}
}
