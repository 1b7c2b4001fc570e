package policy

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	networkingv1 "k8s.io/api/networking/v1"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/metadata"
)

// nodeView is one node's compiled datapath state, as the agent writes it.
type nodeView struct {
	c     *Compiled
	epOf  map[string]uint32 // ns/name -> endpoint id
	rules *RuleTable
}

// compileNodes compiles the cluster for each of its nodes, every pod a
// local endpoint of its node.
func compileNodes(t testing.TB, m *Model) map[string]*nodeView {
	t.Helper()
	out := map[string]*nodeView{}
	for _, n := range m.Snapshot.Nodes {
		comp := NewCompiler(n.Name)
		v := &nodeView{epOf: map[string]uint32{}, rules: comp.Rules}
		var locals []LocalEndpoint
		for i, p := range m.Pods() {
			if p.Spec.NodeName != n.Name {
				continue
			}
			id := uint32(100 + i)
			locals = append(locals, LocalEndpoint{ID: id, Namespace: p.Namespace, Name: p.Name})
			v.epOf[p.Namespace+"/"+p.Name] = id
		}
		v.c = comp.Compile(m, locals)
		out[n.Name] = v
	}
	return out
}

// datapathVerdict emulates both nodes' datapaths for one new connection.
func datapathVerdict(nodes map[string]*nodeView, m *Model, from, to string, port uint16, proto Proto) (egress, ingress Verdict, egOn, inOn bool) {
	fns, fname, _ := strings.Cut(from, "/")
	tns, tname, _ := strings.Cut(to, "/")
	src, dst := m.Pod(fns, fname), m.Pod(tns, tname)
	srcIP, dstIP := netip.MustParseAddr(src.Status.PodIP), netip.MustParseAddr(dst.Status.PodIP)
	egress, ingress = Verdict{Allowed: true}, Verdict{Allowed: true}
	sn := nodes[src.Spec.NodeName]
	ep := sn.epOf[from]
	if sn.c.Endpoints[ep].Flags.Egress {
		egOn = true
		egress = Lookup(sn.c.PolicyMap(), ep, IPCacheLookup(sn.c.IPCache, dstIP), port, uint8(proto), contract.DirectionEgress)
	}
	dn := nodes[dst.Spec.NodeName]
	ep = dn.epOf[to]
	if dn.c.Endpoints[ep].Flags.Ingress {
		inOn = true
		ingress = Lookup(dn.c.PolicyMap(), ep, IPCacheLookup(dn.c.IPCache, srcIP), port, uint8(proto), contract.DirectionIngress)
	}
	return
}

func refsString(rs []Ref) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

func allowedByRefs(rs []RuleRef) []Ref {
	var out []Ref
	for _, r := range rs {
		out = append(out, r.Policy)
	}
	slices.SortFunc(out, compareRefs)
	return slices.Compact(out)
}

// compiledCell looks one new connection up in the compiled entries as the
// datapath does, checks that enforcement and the policies each rule id
// names agree with the model, and returns whether it is allowed.
func compiledCell(t *testing.T, nodes map[string]*nodeView, m *Model, from, to string, port uint16, proto Proto) bool {
	t.Helper()
	fns, fname, _ := strings.Cut(from, "/")
	tns, tname, _ := strings.Cut(to, "/")
	fe, _ := m.PodEndpoint(fns, fname)
	te, _ := m.PodEndpoint(tns, tname)
	eg, in, egOn, inOn := datapathVerdict(nodes, m, from, to, port, proto)
	d := m.Allowed(fe, te, port, proto)
	if egOn != d.Egress.Enforced || inOn != d.Ingress.Enforced {
		t.Errorf("%s -> %s %d/%s: enforcement egress %v ingress %v, model %v %v", from, to, port, proto, egOn, inOn, d.Egress.Enforced, d.Ingress.Enforced)
	}
	check := func(side string, v Verdict, s Side, rules *RuleTable) {
		if !s.Enforced {
			return
		}
		if v.Allowed != s.Allowed {
			t.Errorf("%s -> %s %d/%s %s: compiled allowed=%v, model %v", from, to, port, proto, side, v.Allowed, s.Allowed)
		}
		want := s.IsolatedBy
		if s.Allowed {
			want = allowedByRefs(s.AllowedBy)
		}
		if got := refsString(rules.Refs(v.RuleID)); got != refsString(want) {
			t.Errorf("%s -> %s %d/%s %s: rule %d names %q, model %q", from, to, port, proto, side, v.RuleID, got, refsString(want))
		}
	}
	check("egress", eg, d.Egress, nodes[fe.Pod.Spec.NodeName].rules)
	check("ingress", in, d.Ingress, nodes[te.Pod.Spec.NodeName].rules)
	return eg.Allowed && in.Allowed
}

// The compiled entries, looked up the way the datapath does, give the same
// table as the model and the expected table, and name the same policies.
func TestCompiledScenarios(t *testing.T) {
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			c := newTestCluster(t, "")
			c.apply(t, sc.policies(c.ip, testCIDR16)+sc.mutate)
			m := NewModel(c.snap)
			nodes := compileNodes(t, m)
			got := map[cell]bool{}
			for _, from := range modelPods() {
				for _, to := range modelPods() {
					for _, pp := range modelPorts {
						if from == to {
							got[cell{from, to, pp}] = true
							continue
						}
						proto, _ := ParseProto(pp.proto)
						got[cell{from, to, pp}] = compiledCell(t, nodes, m, from, to, uint16(pp.port), proto)
					}
				}
			}
			if d := diffTables(sc.expect, got); d != "" {
				t.Errorf("compiled datapath disagrees with the expected table:\n%s", d)
			}
		})
	}
}

// endPort ranges compile to exactly their ports, however wide: every port
// of 1000-65535 and 1-65535 and none outside, with the policies named as
// the model names them, also where a peer's range holds an any-peer port
// or an any-peer range holds a peer's port.
func TestCompiledPortRanges(t *testing.T) {
	c := newTestCluster(t, np("x", "tcp-range-from-b", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: b}}
  ports:
  - {port: 1000, endPort: 65535, protocol: TCP}`)+np("x", "udp-all-ports", `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {port: 1, endPort: 65535, protocol: UDP}`)+np("x", "tcp-30000-from-any", `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {port: 30000, protocol: TCP}
  - {port: 40000, endPort: 40010, protocol: TCP}`)+np("x", "udp-80-from-c", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - podSelector: {matchLabels: {pod: c}}
  ports:
  - {port: 80, protocol: UDP}`)+np("y", "egress-all-ports", `podSelector: {matchLabels: {pod: a}}
policyTypes: [Egress]
egress:
- to:
  - namespaceSelector: {matchLabels: {ns: x}}
  ports:
  - {port: 1, endPort: 65535, protocol: TCP}
- to:
  - namespaceSelector: {matchLabels: {ns: x}}`))
	m := NewModel(c.snap)
	if len(m.Errors) > 0 {
		t.Fatal(m.Errors)
	}
	nodes := compileNodes(t, m)
	ports := []uint16{1, 2, 79, 80, 81, 999, 1000, 1001, 1007, 1008, 1023, 1024, 29999, 30000, 30001,
		32767, 32768, 39999, 40000, 40010, 40011, 64000, 65534, 65535}
	for _, from := range []string{"x/b", "x/c", "y/a", "z/b"} {
		for _, to := range []string{"x/a", "x/b"} {
			for _, port := range ports {
				for _, proto := range []Proto{TCP, UDP} {
					compiledCell(t, nodes, m, from, to, port, proto)
				}
			}
		}
	}
	for _, tc := range []struct {
		from  string
		port  uint16
		proto Proto
		want  bool
	}{
		{"x/b", 30000, TCP, true}, {"x/b", 64000, TCP, true}, {"x/b", 65535, TCP, true},
		{"x/b", 80, TCP, false}, {"x/b", 999, TCP, false},
		{"x/c", 30000, TCP, true}, {"x/c", 30001, TCP, false}, {"x/c", 64000, TCP, false},
		{"z/b", 1, UDP, true}, {"z/b", 65535, UDP, true},
		{"y/a", 30000, TCP, true}, {"y/a", 80, TCP, false}, {"y/a", 40005, TCP, true},
	} {
		if got := compiledCell(t, nodes, m, tc.from, "x/a", tc.port, tc.proto); got != tc.want {
			t.Errorf("%s -> x/a %d/%s: allowed=%v, want %v", tc.from, tc.port, tc.proto, got, tc.want)
		}
	}
	// Eight blocks for 1000-65535 and sixteen for 1-65535, not a key per port.
	if n := nodes[m.Pod("x", "a").Spec.NodeName].c.Endpoints[nodes[m.Pod("x", "a").Spec.NodeName].epOf["x/a"]].Entries; len(n) > 100 {
		t.Errorf("x/a has %d entries", len(n))
	}
}

func TestIdentitiesDeterministic(t *testing.T) {
	c := newTestCluster(t, "")
	a := ComputeIdentities(NewModel(c.snap))
	// Same keys in another order give the same numbers.
	slices.Reverse(c.snap.Pods)
	b := ComputeIdentities(NewModel(c.snap))
	seen := map[uint32]string{}
	for _, p := range c.snap.Pods {
		ia, _ := a.Pod(p.Namespace, p.Name)
		ib, _ := b.Pod(p.Namespace, p.Name)
		if ia != ib || ia < MinPodIdentity || ia > MaxPodIdentity {
			t.Errorf("%s/%s: %d vs %d", p.Namespace, p.Name, ia, ib)
		}
		if o, dup := seen[ia]; dup {
			t.Errorf("%s/%s shares identity %d with %s", p.Namespace, p.Name, ia, o)
		}
		seen[ia] = p.Namespace + "/" + p.Name
	}
	// Equal namespace and labels share one identity.
	c.snap.Pods[0].Labels = c.snap.Pods[1].Labels
	if c.snap.Pods[0].Namespace == c.snap.Pods[1].Namespace {
		ids := ComputeIdentities(NewModel(c.snap))
		i0, _ := ids.Pod(c.snap.Pods[0].Namespace, c.snap.Pods[0].Name)
		i1, _ := ids.Pod(c.snap.Pods[1].Namespace, c.snap.Pods[1].Name)
		if i0 != i1 {
			t.Errorf("equal labels, identities %d and %d", i0, i1)
		}
	}
	if got := a.PodIdentity("nowhere", "nothing"); got != contract.IdentityInit {
		t.Errorf("unknown pod: identity %d", got)
	}
}

// Colliding hashes are resolved by probing in key order, the same way
// whatever order the keys come in.
func TestAssignCollisions(t *testing.T) {
	keys := []string{"a", "b", "c"}
	x := assign(keys, 10, 12)
	seen := map[uint32]bool{}
	for _, k := range keys {
		if x[k] < 10 || x[k] > 12 || seen[x[k]] {
			t.Fatalf("assign: %v", x)
		}
		seen[x[k]] = true
	}
	y := assign(keys, 10, 12)
	if fmt.Sprint(x) != fmt.Sprint(y) {
		t.Errorf("not deterministic: %v vs %v", x, y)
	}
}

// A compiler that reuses its previous compile (same pods, namespaces and
// nodes; only policies changed) gives exactly what a fresh one gives.
func TestCompileReuseMatchesFresh(t *testing.T) {
	base := newTestCluster(t, "")
	// Identical policy documents keep one object, as the manifests folder
	// keeps the object of an unchanged file.
	objs := map[string]*networkingv1.NetworkPolicy{}
	reused := NewCompiler("node1")
	var locals []LocalEndpoint
	for i, p := range base.snap.Pods {
		if p.Spec.NodeName == "node1" {
			locals = append(locals, LocalEndpoint{ID: uint32(i + 1), Namespace: p.Namespace, Name: p.Name})
		}
	}
	total, recomputed := 0, 0
	for _, sc := range scenarios {
		if sc.mutate != "" {
			continue
		}
		var in metadata.Snapshot
		if _, err := metadata.ParseManifests([]byte(sc.policies(base.ip, testCIDR16)), &in); err != nil {
			t.Fatal(err)
		}
		snap := *base.snap
		snap.NetworkPolicies = nil
		for _, np := range in.NetworkPolicies {
			b, _ := json.Marshal(np)
			if o, ok := objs[string(b)]; ok {
				np = o
			}
			objs[string(b)] = np
			snap.NetworkPolicies = append(snap.NetworkPolicies, np)
		}
		got := reused.Compile(reused.NewModel(&snap), locals)
		fresh := NewCompiler("node1")
		want := fresh.Compile(NewModel(&snap), locals)
		total += got.Groups
		recomputed += got.Recomputed
		render := func(c *Compiled, rules *RuleTable) string {
			var lines []string
			for k, v := range c.PolicyMap() {
				lines = append(lines, fmt.Sprintf("%+v deny=%v %s", k, v.Deny, refsString(rules.Refs(v.RuleID))))
			}
			for id, e := range c.Endpoints {
				lines = append(lines, fmt.Sprintf("ep %d %d %+v", id, e.Identity, e.Flags))
			}
			slices.Sort(lines)
			return strings.Join(lines, "\n")
		}
		if g, w := render(got, reused.Rules), render(want, fresh.Rules); g != w {
			t.Errorf("%s: reused compile differs from a fresh one", sc.name)
		}
	}
	if recomputed == total {
		t.Errorf("nothing was reused (%d groups)", total)
	}
	t.Logf("%d of %d endpoint groups recomputed", recomputed, total)
}
