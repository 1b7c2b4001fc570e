package policy

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loupe-project/loupe/metadata"
)

// Benchmark cluster: 50 namespaces x 100 pods (5,000), 20 apps of 5 pods
// per namespace (1,000 identities), 10 nodes, 1,000 policies of the usual
// shapes (pod selector, namespace selector, both, named and numeric ports,
// a port range, ipBlock with except, egress rules).
const (
	benchNamespaces = 50
	benchPodsPerNS  = 100
	benchNodes      = 10
	benchPolicies   = 1000
)

func benchSnapshot() *metadata.Snapshot {
	s := &metadata.Snapshot{Generation: "1"}
	for n := 0; n < benchNodes; n++ {
		node := &corev1.Node{}
		node.Name = fmt.Sprintf("node%d", n)
		node.Spec.PodCIDR = fmt.Sprintf("10.%d.0.0/16", 10+n)
		node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: fmt.Sprintf("172.30.0.%d", 10+n)}}
		s.Nodes = append(s.Nodes, node)
	}
	i := 0
	for ns := 0; ns < benchNamespaces; ns++ {
		name := fmt.Sprintf("ns%d", ns)
		s.Namespaces = append(s.Namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels: map[string]string{"team": fmt.Sprintf("t%d", ns%5), "env": []string{"prod", "dev"}[ns%2]}}})
		for p := 0; p < benchPodsPerNS; p++ {
			node := i % benchNodes
			ip := fmt.Sprintf("10.%d.%d.%d", 10+node, (i/benchNodes)/250, (i/benchNodes)%250+2)
			s.Pods = append(s.Pods, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", p), Namespace: name,
					Labels: map[string]string{"app": fmt.Sprintf("app%d", p/5), "tier": []string{"web", "api", "db"}[p%3/2]}},
				Spec: corev1.PodSpec{NodeName: fmt.Sprintf("node%d", node), Containers: []corev1.Container{{Name: "c",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080, Protocol: corev1.ProtocolTCP},
						{Name: "metrics", ContainerPort: 9090, Protocol: corev1.ProtocolTCP}}}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
			})
			i++
		}
	}
	for p := 0; p < benchPolicies; p++ {
		s.NetworkPolicies = append(s.NetworkPolicies, benchPolicy(p, 0))
	}
	return s
}

func benchPolicy(p, variant int) *networkingv1.NetworkPolicy {
	tcp := corev1.ProtocolTCP
	port := func(v int) *intstr.IntOrString { x := intstr.FromInt32(int32(v)); return &x }
	named := func(n string) *intstr.IntOrString { x := intstr.FromString(n); return &x }
	end := int32(8100 + variant)
	ns := fmt.Sprintf("ns%d", p%benchNamespaces)
	app := fmt.Sprintf("app%d", (p/benchNamespaces)%20)
	peerApp := fmt.Sprintf("app%d", (p/benchNamespaces+1+variant)%20)
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pol%d", p), Namespace: ns}}
	np.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	switch p % 4 {
	case 0:
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": peerApp}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: named("http")}, {Protocol: &tcp, Port: port(9090)}},
		}}
	case 1:
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{
				NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", p%5)}},
				PodSelector:       &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"web"}}}},
			}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: port(8080), EndPort: &end}},
		}}
	case 2:
		np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "192.168.0.0/16", Except: []string{fmt.Sprintf("192.168.%d.0/24", p%250)}}}},
		}}
		np.Spec.Egress = []networkingv1.NetworkPolicyEgressRule{{
			To:    []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"env": "prod"}}}},
			Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: named("http")}},
		}}
	default:
		np.Spec.Ingress = []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": peerApp}}},
				{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "t0"}}}},
		}}
	}
	return np
}

func benchLocals(m *Model, node string) []LocalEndpoint {
	var out []LocalEndpoint
	for i, p := range m.Pods() {
		if node == "" || p.Spec.NodeName == node {
			out = append(out, LocalEndpoint{ID: uint32(i + 1), Namespace: p.Namespace, Name: p.Name})
		}
	}
	return out
}

// Full compile of one node (500 local pods) from the snapshot: model,
// identities, ipcache, entries.
func BenchmarkCompileNode(b *testing.B) {
	snap := benchSnapshot()
	var c *Compiled
	for b.Loop() {
		m := NewModel(snap)
		c = NewCompiler("node0").Compile(m, benchLocals(m, "node0"))
	}
	b.ReportMetric(float64(c.NumEntries()), "policy-entries")
	b.ReportMetric(float64(len(c.IPCache)), "ipcache-entries")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/compile")
}

// The worst case: every one of the 5,000 pods local to the node compiled.
func BenchmarkCompileAllPods(b *testing.B) {
	snap := benchSnapshot()
	var c *Compiled
	for b.Loop() {
		m := NewModel(snap)
		c = NewCompiler("node0").Compile(m, benchLocals(m, ""))
	}
	b.ReportMetric(float64(c.NumEntries()), "policy-entries")
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/compile")
}

// One policy changes: the engine recompiles and writes only the
// difference to (in-memory) maps.
func BenchmarkIncrementalUpdate(b *testing.B) {
	snap := benchSnapshot()
	m := NewModel(snap)
	dp := newMemDatapath()
	eps := &memEndpoints{dp: dp, eps: map[uint32]*EndpointState{}, ips: map[uint32]netip.Addr{}}
	for _, l := range benchLocals(m, "node0") {
		eps.eps[l.ID] = &EndpointState{ID: l.ID, Ifindex: l.ID + 1000, Namespace: l.Namespace, Name: l.Name}
	}
	eng := NewEngine(EngineConfig{Node: "node0", Datapath: dp, Endpoints: eps})
	if _, err := eng.Apply(snap); err != nil {
		b.Fatal(err)
	}
	var st ApplyStats
	i := 0
	for b.Loop() {
		i++
		next := *snap
		next.NetworkPolicies = append([]*networkingv1.NetworkPolicy(nil), snap.NetworkPolicies...)
		next.NetworkPolicies[0] = benchPolicy(0, i%7+1) // a different peer and range each time
		var err error
		if st, err = eng.Apply(&next); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(st.Upserted+st.Deleted), "entries-written")
	b.ReportMetric(float64(st.Entries), "policy-entries")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/update")
}
