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
//   - A policy the API server would refuse (validate.go; only a folder
//     source can hold one) is reported and enforced fail-closed: it
//     isolates the pods it selects in the directions it declares and
//     allows nothing, rather than leaving them open.
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
	"k8s.io/apimachinery/pkg/labels"

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
	// Invalid is why the API server would refuse Source; such a policy
	// is enforced fail-closed (failClosed): it allows nothing.
	Invalid error
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
	// Errors lists the policies of the snapshot that failed validation
	// (an API server would have refused them). Each is in Policies too,
	// fail-closed: it isolates the pods it selects and allows nothing.
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
			if p.Invalid != nil {
				m.Errors = append(m.Errors, p.Invalid)
			}
			m.Policies = append(m.Policies, p)
			continue
		}
		p, err := ParsePolicy(np)
		if err != nil {
			m.Errors = append(m.Errors, err)
			p = failClosed(np, err)
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
