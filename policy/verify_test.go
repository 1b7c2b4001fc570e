package policy

import (
	"fmt"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/loupe-project/loupe/contract"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func tcpFlow(src, dst string, sport, dport uint32, syn, ack bool) *flowpb.Flow {
	return &flowpb.Flow{
		IP: &flowpb.IP{Source: src, Destination: dst},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport,
			Flags: &flowpb.TCPFlags{SYN: syn, ACK: ack}}}},
		IsReply: wrapperspb.Bool(!syn || ack),
	}
}

func udpFlow(src, dst string, sport, dport uint32) *flowpb.Flow {
	return &flowpb.Flow{
		IP:      &flowpb.IP{Source: src, Destination: dst},
		L4:      &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: sport, DestinationPort: dport}}},
		IsReply: wrapperspb.Bool(false),
	}
}

// Recorded traffic between every pair of the model on every port, twice
// (both nodes report a flow) and with replies: verify reports exactly the
// connections a new deny policy cuts, counted right.
func TestVerifyReportsExactlyTheCutConnections(t *testing.T) {
	c := newTestCluster(t, "")
	var flows []*flowpb.Flow
	sport := uint32(40000)
	for _, from := range modelPods() {
		for _, to := range modelPods() {
			if from == to {
				continue
			}
			for _, pp := range modelPorts {
				for conn := 0; conn < 2; conn++ {
					sport++
					if pp.proto == "TCP" {
						syn := tcpFlow(c.ip(from), c.ip(to), sport, uint32(pp.port), true, false)
						flows = append(flows, syn, syn, tcpFlow(c.ip(to), c.ip(from), uint32(pp.port), sport, true, true),
							tcpFlow(c.ip(from), c.ip(to), sport, uint32(pp.port), false, true))
					} else {
						f := udpFlow(c.ip(from), c.ip(to), sport, uint32(pp.port))
						flows = append(flows, f, f)
					}
				}
			}
		}
	}
	conns := Connections(flows)
	if len(conns) != 9*8*4 {
		t.Fatalf("%d distinct connections, want %d", len(conns), 9*8*4)
	}
	for _, cc := range conns {
		if cc.Connections != 2 || cc.Flows != 4 {
			t.Fatalf("%+v: want 2 connections in 4 flows", cc)
		}
	}
	newPols, err := ParsePolicies([]byte(np("x", "y-on-81", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 81, protocol: TCP}`)), "new.yaml")
	if err != nil {
		t.Fatal(err)
	}
	changes := Verify(c.snap, newPols, conns)
	want := map[string]bool{}
	exp := allAllowed().deny("*", "x/a").set("y/*", "x/a", "81/TCP", true)
	for _, from := range modelPods() {
		for _, to := range modelPods() {
			for _, pp := range modelPorts {
				if from != to && !exp.expected(from, to, pp) {
					want[fmt.Sprintf("%s -> %s:%s", from, to, pp)] = true
				}
			}
		}
	}
	got := map[string]bool{}
	for _, ch := range changes {
		if ch.NowAllowed || ch.Connections != 2 || len(ch.DecidedBy) != 1 || ch.DecidedBy[0].Name != "y-on-81" {
			t.Errorf("change %s", ch)
		}
		got[fmt.Sprintf("%s -> %s:%d/%s", ch.From, ch.To, ch.Port, ch.Proto)] = true
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("changes:\n%v\nwant:\n%v", got, want)
	}
	// Removing the cut (an allow-all for x/a) under the new set reports the
	// reverse, as newly allowed.
	c.apply(t, np("x", "y-on-81", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 81, protocol: TCP}`))
	allowAllA, _ := ParsePolicies([]byte(np("x", "open-a", "podSelector: {matchLabels: {pod: a}}\ningress:\n- {}")), "open.yaml")
	back := Verify(c.snap, allowAllA, conns)
	if len(back) != len(want) || !back[0].NowAllowed || back[0].DecidedBy[0].Name != "open-a" {
		t.Errorf("reverse: %d changes (want %d), first %v", len(back), len(want), back[0])
	}
	// Nothing changes: no lines.
	if ch := Verify(c.snap, allowAllA[:0], conns); len(ch) != 0 {
		t.Errorf("no new policy, %d changes", len(ch))
	}
}

func TestParsePoliciesBadInput(t *testing.T) {
	good := np("x", "ok", "podSelector: {}")
	cases := map[string]struct{ doc, want string }{
		"not a policy":     {"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n", "document 2: kind: Pod is not a NetworkPolicy"},
		"wrong apiVersion": {"apiVersion: extensions/v1beta1\nkind: NetworkPolicy\nmetadata: {name: p}\n", "apiVersion: NetworkPolicy must be networking.k8s.io/v1"},
		"unknown protocol": {np("x", "p", "podSelector: {}\ningress:\n- ports:\n  - {port: 80, protocol: ICMP}"), `NetworkPolicy x/p is invalid: spec.ingress[0].ports[0].protocol: Unsupported value: "ICMP"`},
		"bad cidr":         {np("x", "p", "podSelector: {}\negress:\n- to:\n  - ipBlock: {cidr: 10.0.0.300/8}"), `NetworkPolicy x/p is invalid: spec.egress[0].to[0].ipBlock.cidr: Invalid value: "10.0.0.300/8"`},
		"endPort no port":  {np("x", "p", "podSelector: {}\ningress:\n- ports:\n  - {endPort: 90}"), "NetworkPolicy x/p is invalid: spec.ingress[0].ports[0].endPort: Invalid value: 90: may not be specified when `port` is not specified"},
		"unknown field":    {np("x", "p", "podSelector: {}\ningres: []"), "unknown field"},
		"duplicate":        {good, "NetworkPolicy x/ok: also in document 1"},
		"not yaml":         {"kind: [", "document 2"},
	}
	for name, c := range cases {
		_, err := ParsePolicies([]byte(good+c.doc), "new.yaml")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "new.yaml: ") {
			t.Errorf("%s: error %v, want it to contain %q", name, err, c.want)
		}
	}
	if _, err := ParsePolicies([]byte("# nothing\n"), "empty.yaml"); err == nil || !strings.Contains(err.Error(), "no NetworkPolicy") {
		t.Errorf("empty file: %v", err)
	}
	pols, err := ParsePolicies([]byte(good+"---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: nons}\nspec: {podSelector: {}}\n"), "ok.yaml")
	if err != nil || len(pols) != 2 || pols[1].Namespace != "default" {
		t.Errorf("good file: %v %v", pols, err)
	}
}

// Check finds datapath verdicts the model does not share, and nothing
// when they agree.
func TestCheck(t *testing.T) {
	c := newTestCluster(t, np("x", "y-on-81", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 81, protocol: TCP}`))
	verdict := func(from, to string, port uint32, names ...string) *flowpb.Flow {
		f := tcpFlow(c.ip(from), c.ip(to), 45000, port, true, false)
		f.EventType = &flowpb.CiliumEventType{Type: contract.MessageTypePolicyVerdict}
		f.Verdict = flowpb.Verdict_FORWARDED
		f.TrafficDirection = flowpb.TrafficDirection_INGRESS
		for _, n := range names {
			f.IngressAllowedBy = append(f.IngressAllowedBy, &flowpb.Policy{Namespace: "x", Name: n, Kind: KindNetworkPolicy})
		}
		return f
	}
	drop := func(from, to string, port uint32) *flowpb.Flow {
		f := tcpFlow(c.ip(from), c.ip(to), 45000, port, true, false)
		f.EventType = &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 133}
		f.Verdict = flowpb.Verdict_DROPPED
		f.DropReasonDesc = flowpb.DropReason_POLICY_DENIED
		f.TrafficDirection = flowpb.TrafficDirection_INGRESS
		f.IsReply = nil
		return f
	}
	good := []*flowpb.Flow{verdict("y/b", "x/a", 81, "y-on-81"), drop("z/b", "x/a", 81), drop("y/b", "x/a", 80), verdict("y/c", "x/a", 81)}
	if n, d := Check(c.snap, good); n != 4 || len(d) != 0 {
		t.Errorf("agreeing flows: checked %d, disagreements %v", n, d)
	}
	bad := []*flowpb.Flow{verdict("z/b", "x/a", 81), drop("y/b", "x/a", 81), verdict("y/b", "x/a", 81, "other"), verdict("x/a", "x/b", 80)}
	n, d := Check(c.snap, bad)
	if n != 4 || len(d) != 4 {
		t.Fatalf("disagreeing flows: checked %d, disagreements %v", n, d)
	}
	for i, want := range []string{"model denies it", "model allows it", "the flow names x/other", "no policy isolates"} {
		if !strings.Contains(d[i].Problem, want) {
			t.Errorf("disagreement %d: %+v, want %q", i, d[i], want)
		}
	}
}

// Policies are read as YAML 1.2: a bare y stays the namespace y and the
// label value y. Read as YAML 1.1 both became "true", the policy selected
// nothing, and verify reported no change.
func TestParsePoliciesKeepsBareYAsString(t *testing.T) {
	pols, err := ParsePolicies([]byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: only-from-y, namespace: y, labels: {on: off}}
spec:
  podSelector: {matchLabels: {pod: b}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: y}}
`), "bare.yaml")
	if err != nil {
		t.Fatal(err)
	}
	np := pols[0]
	if np.Namespace != "y" || np.Labels["on"] != "off" || np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["ns"] != "y" {
		t.Fatalf("parsed as namespace %q, labels %v, selector %v", np.Namespace, np.Labels, np.Spec.Ingress[0].From[0].NamespaceSelector)
	}
	c := newTestCluster(t, "")
	var flows []*flowpb.Flow
	for i, from := range []string{"x/a", "y/a"} {
		flows = append(flows, tcpFlow(c.ip(from), c.ip("y/b"), uint32(40000+i), 80, true, false))
	}
	changes := Verify(c.snap, pols, Connections(flows))
	if len(changes) != 1 || changes[0].From != "x/a" || changes[0].To != "y/b" || changes[0].NowAllowed {
		t.Fatalf("changes %v, want x/a -> y/b newly denied", changes)
	}
}
