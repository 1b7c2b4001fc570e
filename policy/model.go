// Package policy implements Kubernetes networking.k8s.io/v1 NetworkPolicy
// for loupe: a model that answers "is this connection allowed, and by
// which policies" with the exact upstream semantics, deterministic
// cluster-wide security identities, and a compiler from the model to the
// datapath's identity- and CIDR-based policy map entries.
//
// Semantics (as upstream and its e2e suite):
//   - A pod is isolated for a direction when a policy of its namespace
//     selects it (spec.podSelector; empty selects the whole namespace) and
//     that policy's policyTypes contain the direction. Omitted policyTypes
//     mean Ingress, plus Egress when spec.egress has rules.
//   - A connection passes when the source side allows it (source not
//     isolated for egress, or some egress rule of a selecting policy
//     matches the destination and port) and the destination side allows it
//     (the ingress counterpart). Policies are unioned; there are no denies.
//   - Rule peers: podSelector alone selects pods of the policy's
//     namespace; namespaceSelector alone all pods of matching namespaces;
//     both in one peer must both match (AND); separate peers are ORed. An
//     ipBlock matches addresses in cidr and in none of except, pod
//     addresses included. Empty from/to matches everything, empty ports
//     every port.
//   - Ports: protocol defaults to TCP; a numeric port with endPort is a
//     range; a named port resolves against the destination pod's container
//     ports of that name and protocol (so it never matches a non-pod).
//   - Traffic between a pod and its own node is always allowed (kubelet
//     probes). Traffic from a pod to itself is allowed regardless of
//     policy: the e2e suite's reachability expects loopback to pass
//     (AllowLoopback), and in loupe it never leaves the pod's netns.
//   - Every namespace carries kubernetes.io/metadata.name=<name>, as the
//     API server guarantees, even if the manifest left it out.
package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/loupe-project/loupe/metadata"
)

// Proto is an IP protocol number, as in the datapath.
type Proto uint8

// Protocols NetworkPolicy knows.
const (
	TCP  Proto = 6
	UDP  Proto = 17
	SCTP Proto = 132
)

func (p Proto) String() string {
	switch p {
	case TCP:
		return "TCP"
	case UDP:
		return "UDP"
	case SCTP:
		return "SCTP"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// ParseProto reads TCP, UDP or SCTP (any case).
func ParseProto(s string) (Proto, error) {
	switch strings.ToUpper(s) {
	case "TCP":
		return TCP, nil
	case "UDP":
		return UDP, nil
	case "SCTP":
		return SCTP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want TCP, UDP or SCTP)", s)
}

func protoOf(p *corev1.Protocol) (Proto, error) {
	if p == nil || *p == "" {
		return TCP, nil
	}
	switch *p {
	case corev1.ProtocolTCP:
		return TCP, nil
	case corev1.ProtocolUDP:
		return UDP, nil
	case corev1.ProtocolSCTP:
		return SCTP, nil
	}
	return 0, fmt.Errorf("unknown protocol %q (want TCP, UDP or SCTP)", *p)
}

// KindNetworkPolicy is the Kind reported in Refs.
const KindNetworkPolicy = "NetworkPolicy"

// Ref names a policy.
type Ref struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Kind      string `json:"kind"`
}

func (r Ref) String() string { return r.Namespace + "/" + r.Name }

func compareRefs(a, b Ref) int {
	if c := strings.Compare(a.Namespace, b.Namespace); c != 0 {
		return c
	}
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	return strings.Compare(a.Kind, b.Kind)
}

// portRule is one entry of a rule's ports.
type portRule struct {
	proto   Proto
	port    uint16 // 0: every port of proto (unless name is set)
	endPort uint16 // 0: no range
	name    string // named port
}

// peerRule is one entry of a rule's from/to.
type peerRule struct {
	pods   labels.Selector // nil: not given
	nsSel  labels.Selector // nil: not given
	block  *ipBlock
	policy string // the policy's namespace (podSelector alone)
}

type ipBlock struct {
	cidr   netip.Prefix
	except []netip.Prefix
}

func (b *ipBlock) contains(a netip.Addr) bool {
	if !b.cidr.Contains(a) {
		return false
	}
	for _, e := range b.except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

// rule is one ingress or egress rule.
type rule struct {
	index    int
	peers    []peerRule // empty: any peer
	ports    []portRule // empty: any port
	anyPeer  bool
	anyPorts bool
}

// Policy is one parsed and validated NetworkPolicy.
type Policy struct {
	Ref      Ref
	selector labels.Selector
	ingress  bool // policyTypes contain Ingress
	egress   bool
	inRules  []rule
	egRules  []rule
	Source   *networkingv1.NetworkPolicy
}

// FieldError is a validation failure naming the object and its field.
type FieldError struct {
	Object string // "NetworkPolicy ns/name"
	Field  string // "spec.ingress[0].ports[1].protocol"
	Msg    string
}

func (e *FieldError) Error() string { return e.Object + ": " + e.Field + ": " + e.Msg }

// ParsePolicy validates np and prepares its selectors.
func ParsePolicy(np *networkingv1.NetworkPolicy) (*Policy, error) {
	obj := "NetworkPolicy " + np.Namespace + "/" + np.Name
	fail := func(field, format string, args ...any) error {
		return &FieldError{Object: obj, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	if np.Name == "" {
		return nil, fail("metadata.name", "required")
	}
	if np.Namespace == "" {
		return nil, fail("metadata.namespace", "required")
	}
	p := &Policy{Ref: Ref{Namespace: np.Namespace, Name: np.Name, Kind: KindNetworkPolicy}, Source: np}
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fail("spec.podSelector", "%v", err)
	}
	p.selector = sel
	if len(np.Spec.PolicyTypes) == 0 {
		p.ingress = true
		p.egress = len(np.Spec.Egress) > 0
	}
	for i, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			p.ingress = true
		case networkingv1.PolicyTypeEgress:
			p.egress = true
		default:
			return nil, fail(fmt.Sprintf("spec.policyTypes[%d]", i), "unknown policy type %q (want Ingress or Egress)", t)
		}
	}
	for i, r := range np.Spec.Ingress {
		pr, err := parseRule(np.Namespace, fmt.Sprintf("spec.ingress[%d]", i), "from", i, r.From, r.Ports)
		if err != nil {
			return nil, &FieldError{Object: obj, Field: err.Field, Msg: err.Msg}
		}
		p.inRules = append(p.inRules, pr)
	}
	for i, r := range np.Spec.Egress {
		pr, err := parseRule(np.Namespace, fmt.Sprintf("spec.egress[%d]", i), "to", i, r.To, r.Ports)
		if err != nil {
			return nil, &FieldError{Object: obj, Field: err.Field, Msg: err.Msg}
		}
		p.egRules = append(p.egRules, pr)
	}
	return p, nil
}

func parseRule(ns, where, peerField string, index int, peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) (rule, *FieldError) {
	r := rule{index: index, anyPeer: len(peers) == 0, anyPorts: len(ports) == 0}
	for i, pp := range ports {
		f := fmt.Sprintf("%s.ports[%d]", where, i)
		proto, err := protoOf(pp.Protocol)
		if err != nil {
			return r, &FieldError{Field: f + ".protocol", Msg: err.Error()}
		}
		pr := portRule{proto: proto}
		if pp.Port != nil {
			if pp.Port.Type == intstr.String {
				if pp.Port.StrVal == "" {
					return r, &FieldError{Field: f + ".port", Msg: "empty port name"}
				}
				pr.name = pp.Port.StrVal
			} else {
				if pp.Port.IntVal < 1 || pp.Port.IntVal > 65535 {
					return r, &FieldError{Field: f + ".port", Msg: fmt.Sprintf("%d outside 1-65535", pp.Port.IntVal)}
				}
				pr.port = uint16(pp.Port.IntVal)
			}
		}
		if pp.EndPort != nil {
			switch {
			case pp.Port == nil:
				return r, &FieldError{Field: f + ".endPort", Msg: "endPort requires port"}
			case pr.name != "":
				return r, &FieldError{Field: f + ".endPort", Msg: "endPort requires a numeric port, not a named one"}
			case *pp.EndPort < int32(pr.port) || *pp.EndPort > 65535:
				return r, &FieldError{Field: f + ".endPort", Msg: fmt.Sprintf("%d must be between port %d and 65535", *pp.EndPort, pr.port)}
			}
			pr.endPort = uint16(*pp.EndPort)
		}
		r.ports = append(r.ports, pr)
	}
	for i, peer := range peers {
		f := fmt.Sprintf("%s.%s[%d]", where, peerField, i)
		pr := peerRule{policy: ns}
		if peer.IPBlock != nil {
			if peer.PodSelector != nil || peer.NamespaceSelector != nil {
				return r, &FieldError{Field: f, Msg: "ipBlock cannot be combined with podSelector or namespaceSelector"}
			}
			cidr, err := netip.ParsePrefix(peer.IPBlock.CIDR)
			if err != nil {
				return r, &FieldError{Field: f + ".ipBlock.cidr", Msg: fmt.Sprintf("%q is not a CIDR", peer.IPBlock.CIDR)}
			}
			b := &ipBlock{cidr: cidr.Masked()}
			for j, e := range peer.IPBlock.Except {
				ex, err := netip.ParsePrefix(e)
				if err != nil {
					return r, &FieldError{Field: fmt.Sprintf("%s.ipBlock.except[%d]", f, j), Msg: fmt.Sprintf("%q is not a CIDR", e)}
				}
				if ex.Addr().Is4() != cidr.Addr().Is4() || ex.Bits() < cidr.Bits() || !b.cidr.Contains(ex.Addr()) {
					return r, &FieldError{Field: fmt.Sprintf("%s.ipBlock.except[%d]", f, j), Msg: fmt.Sprintf("%s is not inside cidr %s", e, peer.IPBlock.CIDR)}
				}
				b.except = append(b.except, ex.Masked())
			}
			pr.block = b
			r.peers = append(r.peers, pr)
			continue
		}
		if peer.PodSelector == nil && peer.NamespaceSelector == nil {
			return r, &FieldError{Field: f, Msg: "a peer needs podSelector, namespaceSelector or ipBlock"}
		}
		if peer.PodSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
			if err != nil {
				return r, &FieldError{Field: f + ".podSelector", Msg: err.Error()}
			}
			pr.pods = s
		}
		if peer.NamespaceSelector != nil {
			s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
			if err != nil {
				return r, &FieldError{Field: f + ".namespaceSelector", Msg: err.Error()}
			}
			pr.nsSel = s
		}
		r.peers = append(r.peers, pr)
	}
	return r, nil
}

// Endpoint is one end of a connection: a pod, or an address outside the
// pods (the world, a node).
type Endpoint struct {
	Pod *corev1.Pod // nil for a non-pod address
	IP  netip.Addr  // the address used (a pod's first address when not given)
}

func (e Endpoint) String() string {
	if e.Pod != nil {
		return e.Pod.Namespace + "/" + e.Pod.Name
	}
	return e.IP.String()
}

// Model is the policies and objects of one snapshot, indexed for lookups.
// It is read-only once built.
type Model struct {
	Snapshot *metadata.Snapshot
	Policies []*Policy
	// Errors lists the policies of the snapshot that failed validation;
	// they are left out (an API server would have refused them).
	Errors []error

	byNS       map[string][]*Policy
	nsLabels   map[string]labels.Set
	pods       map[string]*corev1.Pod // ns/name
	podsByIP   map[netip.Addr]*corev1.Pod
	nodeIPs    map[string][]netip.Addr // node name -> addresses
	nodeByIP   map[netip.Addr]string
	gateways   map[netip.Addr]bool
	podsSorted []*corev1.Pod
}

// NewModel builds the model of snap.
func NewModel(snap *metadata.Snapshot) *Model { return newModel(snap, nil) }

// newModel reuses already parsed policies by object pointer (the metadata
// folder keeps the objects of unchanged files).
func newModel(snap *metadata.Snapshot, parsed map[*networkingv1.NetworkPolicy]*Policy) *Model {
	if snap == nil {
		snap = &metadata.Snapshot{}
	}
	m := &Model{
		Snapshot: snap,
		byNS:     map[string][]*Policy{},
		nsLabels: map[string]labels.Set{},
		pods:     map[string]*corev1.Pod{},
		podsByIP: map[netip.Addr]*corev1.Pod{},
		nodeIPs:  map[string][]netip.Addr{},
		nodeByIP: map[netip.Addr]string{},
		gateways: map[netip.Addr]bool{},
	}
	for _, ns := range snap.Namespaces {
		m.nsLabels[ns.Name] = namespaceLabels(ns.Name, ns.Labels)
	}
	for _, p := range snap.Pods {
		if _, ok := m.nsLabels[p.Namespace]; !ok {
			m.nsLabels[p.Namespace] = namespaceLabels(p.Namespace, nil)
		}
		m.pods[p.Namespace+"/"+p.Name] = p
		if !podHasNetwork(p) {
			continue
		}
		m.podsSorted = append(m.podsSorted, p)
		for _, a := range metadata.PodIPs(p) {
			m.podsByIP[a] = p
		}
	}
	sort.Slice(m.podsSorted, func(i, j int) bool {
		a, b := m.podsSorted[i], m.podsSorted[j]
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	for _, n := range snap.Nodes {
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP && a.Type != corev1.NodeExternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				m.nodeIPs[n.Name] = append(m.nodeIPs[n.Name], ip.Unmap())
				m.nodeByIP[ip.Unmap()] = n.Name
			}
		}
		// The node's gateway (first address of each pod CIDR) is the node too.
		for _, c := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
			if pfx, err := netip.ParsePrefix(c); err == nil && pfx == pfx.Masked() {
				gw := pfx.Addr().Next()
				m.gateways[gw] = true
				if !slices.Contains(m.nodeIPs[n.Name], gw) {
					m.nodeIPs[n.Name] = append(m.nodeIPs[n.Name], gw)
					m.nodeByIP[gw] = n.Name
				}
			}
		}
	}
	for _, np := range snap.NetworkPolicies {
		if p, ok := parsed[np]; ok {
			m.Policies = append(m.Policies, p)
			continue
		}
		p, err := ParsePolicy(np)
		if err != nil {
			m.Errors = append(m.Errors, err)
			continue
		}
		m.Policies = append(m.Policies, p)
	}
	slices.SortFunc(m.Policies, func(a, b *Policy) int { return compareRefs(a.Ref, b.Ref) })
	for _, p := range m.Policies {
		m.byNS[p.Ref.Namespace] = append(m.byNS[p.Ref.Namespace], p)
	}
	return m
}

// namespaceLabels adds the label the API server puts on every namespace.
func namespaceLabels(name string, l map[string]string) labels.Set {
	out := make(labels.Set, len(l)+1)
	for k, v := range l {
		out[k] = v
	}
	out[corev1.LabelMetadataName] = name
	return out
}

// podHasNetwork: pods whose address is their own (not host network, not
// finished, with an address).
func podHasNetwork(p *corev1.Pod) bool {
	if p.Spec.HostNetwork || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return false
	}
	return len(metadata.PodIPs(p)) > 0
}

func (m *Model) isGateway(a netip.Addr) bool { return m.gateways[a] }

// Pod returns the pod ns/name, or nil.
func (m *Model) Pod(namespace, name string) *corev1.Pod { return m.pods[namespace+"/"+name] }

// PodEndpoint is the endpoint of pod ns/name at its first address.
func (m *Model) PodEndpoint(namespace, name string) (Endpoint, error) {
	p := m.Pod(namespace, name)
	if p == nil {
		return Endpoint{}, fmt.Errorf("pod %s/%s not found", namespace, name)
	}
	ips := metadata.PodIPs(p)
	if len(ips) == 0 {
		return Endpoint{}, fmt.Errorf("pod %s/%s has no address", namespace, name)
	}
	return Endpoint{Pod: p, IP: ips[0]}, nil
}

// AddrEndpoint is the endpoint of an address: its pod if a pod has it.
func (m *Model) AddrEndpoint(a netip.Addr) Endpoint {
	a = a.Unmap()
	return Endpoint{Pod: m.podsByIP[a], IP: a}
}

// Pods lists the pods with their own network, sorted by namespace/name.
func (m *Model) Pods() []*corev1.Pod { return m.podsSorted }

func (m *Model) selects(p *Policy, pod *corev1.Pod) bool {
	return pod.Namespace == p.Ref.Namespace && p.selector.Matches(labels.Set(pod.Labels))
}

// peerMatches reports whether a rule peer matches endpoint e.
func (m *Model) peerMatches(pr *peerRule, e Endpoint) bool {
	if pr.block != nil {
		return e.IP.IsValid() && pr.block.contains(e.IP)
	}
	if e.Pod == nil {
		return false
	}
	if pr.nsSel == nil {
		if e.Pod.Namespace != pr.policy {
			return false
		}
	} else if !pr.nsSel.Matches(m.nsLabels[e.Pod.Namespace]) {
		return false
	}
	return pr.pods == nil || pr.pods.Matches(labels.Set(e.Pod.Labels))
}

// portMatches reports whether a rule port matches port/proto on the
// destination dst (for named ports).
func portMatches(pr *portRule, dst Endpoint, port uint16, proto Proto) bool {
	if pr.proto != proto {
		return false
	}
	if pr.name != "" {
		if dst.Pod == nil {
			return false
		}
		for _, p := range namedPorts(dst.Pod, pr.name, proto) {
			if p == port {
				return true
			}
		}
		return false
	}
	if pr.port == 0 {
		return true
	}
	if pr.endPort != 0 {
		return port >= pr.port && port <= pr.endPort
	}
	return port == pr.port
}

// namedPorts resolves a port name on a pod's containers.
func namedPorts(pod *corev1.Pod, name string, proto Proto) []uint16 {
	var out []uint16
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name != name {
				continue
			}
			pp, err := protoOf(&cp.Protocol)
			if err == nil && pp == proto && cp.ContainerPort > 0 && cp.ContainerPort < 65536 {
				out = append(out, uint16(cp.ContainerPort))
			}
		}
	}
	return out
}

func (r *rule) matches(m *Model, peer, dst Endpoint, port uint16, proto Proto) bool {
	if !r.anyPorts {
		ok := false
		for i := range r.ports {
			if portMatches(&r.ports[i], dst, port, proto) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if r.anyPeer {
		return true
	}
	for i := range r.peers {
		if m.peerMatches(&r.peers[i], peer) {
			return true
		}
	}
	return false
}

// RuleRef names one rule of a policy.
type RuleRef struct {
	Policy Ref    `json:"policy"`
	Rule   string `json:"rule"` // "spec.ingress[0]"
}

// Side is the verdict of one end of a connection.
type Side struct {
	// Enforced: the pod is isolated for this direction.
	Enforced bool `json:"enforced"`
	Allowed  bool `json:"allowed"`
	// IsolatedBy: the policies selecting the pod for this direction.
	IsolatedBy []Ref `json:"isolatedBy,omitempty"`
	// AllowedBy: the rules that match the connection.
	AllowedBy []RuleRef `json:"allowedBy,omitempty"`
	// Note explains a verdict that no policy made (host, loopback, not a pod).
	Note string `json:"note,omitempty"`
}

// Decision is the model's verdict on one connection.
type Decision struct {
	Allowed bool `json:"allowed"`
	// Policies decided it: the policies whose rules allowed it, or, when
	// denied, the policies that isolate the side that denied it.
	Policies []Ref  `json:"policies,omitempty"`
	Reason   string `json:"reason"`
	Egress   Side   `json:"egress"`
	Ingress  Side   `json:"ingress"`
}

// Allowed evaluates one new connection from -> to on port/proto in snap.
func Allowed(snap *metadata.Snapshot, from, to Endpoint, port uint16, proto Proto) Decision {
	return NewModel(snap).Allowed(from, to, port, proto)
}

// Allowed evaluates one new connection from -> to on port/proto.
func (m *Model) Allowed(from, to Endpoint, port uint16, proto Proto) Decision {
	if !from.IP.IsValid() && from.Pod != nil {
		if ips := metadata.PodIPs(from.Pod); len(ips) > 0 {
			from.IP = ips[0]
		}
	}
	if !to.IP.IsValid() && to.Pod != nil {
		if ips := metadata.PodIPs(to.Pod); len(ips) > 0 {
			to.IP = ips[0]
		}
	}
	var d Decision
	if from.Pod != nil && to.Pod != nil && from.Pod.Namespace == to.Pod.Namespace && from.Pod.Name == to.Pod.Name {
		d.Allowed = true
		d.Reason = "loopback: a pod reaches itself regardless of policy"
		d.Egress = Side{Allowed: true, Note: "loopback"}
		d.Ingress = Side{Allowed: true, Note: "loopback"}
		return d
	}
	d.Egress = m.side(from, to, to, port, proto, true)
	d.Ingress = m.side(to, from, to, port, proto, false)
	d.Allowed = d.Egress.Allowed && d.Ingress.Allowed
	refs := map[Ref]bool{}
	switch {
	case d.Allowed:
		for _, s := range []Side{d.Egress, d.Ingress} {
			for _, r := range s.AllowedBy {
				refs[r.Policy] = true
			}
		}
		d.Reason = "allowed"
		var parts []string
		for _, s := range []struct {
			name string
			side Side
		}{{"egress", d.Egress}, {"ingress", d.Ingress}} {
			if s.side.Enforced {
				parts = append(parts, fmt.Sprintf("%s allowed by %s", s.name, ruleList(s.side.AllowedBy)))
			} else if s.side.Note != "" {
				parts = append(parts, s.name+": "+s.side.Note)
			} else {
				parts = append(parts, s.name+": no policy isolates "+map[bool]string{true: from.String(), false: to.String()}[s.name == "egress"])
			}
		}
		d.Reason = strings.Join(parts, "; ")
	default:
		var parts []string
		if !d.Egress.Allowed {
			for _, r := range d.Egress.IsolatedBy {
				refs[r] = true
			}
			parts = append(parts, fmt.Sprintf("egress of %s: no rule allows it: default deny from %s", from, refList(d.Egress.IsolatedBy)))
		}
		if !d.Ingress.Allowed {
			for _, r := range d.Ingress.IsolatedBy {
				refs[r] = true
			}
			parts = append(parts, fmt.Sprintf("ingress to %s: no rule allows it: default deny from %s", to, refList(d.Ingress.IsolatedBy)))
		}
		d.Reason = strings.Join(parts, "; ")
	}
	for r := range refs {
		d.Policies = append(d.Policies, r)
	}
	slices.SortFunc(d.Policies, compareRefs)
	return d
}

func refList(rs []Ref) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.String()
	}
	return strings.Join(s, ", ")
}

func ruleList(rs []RuleRef) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = r.Policy.String() + " " + r.Rule
	}
	return strings.Join(s, ", ")
}

// side evaluates one end: self is the pod whose policies apply, peer the
// other end, dst the destination (for named ports).
func (m *Model) side(self, peer, dst Endpoint, port uint16, proto Proto, egress bool) Side {
	var s Side
	if self.Pod == nil {
		s.Allowed = true
		s.Note = "not a pod: no policy applies"
		return s
	}
	if peer.IP.IsValid() && peer.Pod == nil && slices.Contains(m.nodeIPs[self.Pod.Spec.NodeName], peer.IP) {
		s.Allowed = true
		s.Note = "the pod's own node: always allowed"
		return s
	}
	field := "spec.ingress"
	if egress {
		field = "spec.egress"
	}
	for _, p := range m.byNS[self.Pod.Namespace] {
		if !m.selects(p, self.Pod) {
			continue
		}
		rules := p.inRules
		if egress {
			if !p.egress {
				continue
			}
			rules = p.egRules
		} else if !p.ingress {
			continue
		}
		s.Enforced = true
		s.IsolatedBy = append(s.IsolatedBy, p.Ref)
		for i := range rules {
			if rules[i].matches(m, peer, dst, port, proto) {
				s.AllowedBy = append(s.AllowedBy, RuleRef{Policy: p.Ref, Rule: fmt.Sprintf("%s[%d]", field, rules[i].index)})
			}
		}
	}
	s.Allowed = !s.Enforced || len(s.AllowedBy) > 0
	return s
}
