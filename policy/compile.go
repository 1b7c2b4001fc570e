package policy

import (
	"fmt"
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// DefaultMaxRangePorts caps the expansion of one endPort range: the
// datapath matches single ports, so a range becomes one entry per port and
// peer. A longer range is cut to its first DefaultMaxRangePorts ports (the
// rest is denied, never allowed: fail closed) and reported in
// Compiled.Warnings.
const DefaultMaxRangePorts = 1024

// LocalEndpoint is one pod endpoint of this node.
type LocalEndpoint struct {
	ID        uint32 // datapath endpoint id
	Namespace string
	Name      string
}

// Flags are an endpoint's enforcement switches.
type Flags struct{ Ingress, Egress bool }

// Compiled is what the datapath of one node needs for one snapshot.
type Compiled struct {
	Generation string
	Model      *Model
	Identities *Identities
	// Entries is the whole policy map of the node's endpoints.
	Entries map[datapath.PolicyKey]datapath.PolicyEntry
	// Flags and Identity per local endpoint id; endpoints whose pod the
	// snapshot lacks get no flags and IdentityInit.
	Flags    map[uint32]Flags
	Identity map[uint32]uint32
	// IPCache is every prefix the node must know: all pods' addresses,
	// node addresses (host or remote-node), ipBlock prefixes.
	IPCache  map[netip.Prefix]uint32
	Warnings []string
}

// Compiler turns models into datapath entries for one node.
type Compiler struct {
	Node          string
	Rules         *RuleTable
	MaxRangePorts int
}

// NewCompiler returns a compiler for node with a fresh rule table.
func NewCompiler(node string) *Compiler {
	return &Compiler{Node: node, Rules: NewRuleTable(), MaxRangePorts: DefaultMaxRangePorts}
}

type portKey struct {
	port  uint16
	proto uint8
}

type entryKey struct {
	peer  uint32
	port  uint16
	proto uint8
}

// compileState holds per-snapshot caches shared by all endpoints.
type compileState struct {
	c       *Compiler
	m       *Model
	ids     *Identities
	peers   map[*peerRule][]uint32
	idsByNS map[string][]uint32
	// namedCache: identity -> name/proto -> ports
	warnings map[string]bool
}

// Compile computes the node's entries for model m and its local endpoints.
func (c *Compiler) Compile(m *Model, locals []LocalEndpoint) *Compiled {
	ids := ComputeIdentities(m)
	st := &compileState{c: c, m: m, ids: ids, peers: map[*peerRule][]uint32{}, idsByNS: map[string][]uint32{}, warnings: map[string]bool{}}
	for _, id := range ids.sorted {
		ns := ids.pods[id][0].Namespace
		st.idsByNS[ns] = append(st.idsByNS[ns], id)
	}
	out := &Compiled{
		Generation: m.Snapshot.Generation,
		Model:      m,
		Identities: ids,
		Entries:    map[datapath.PolicyKey]datapath.PolicyEntry{},
		Flags:      map[uint32]Flags{},
		Identity:   map[uint32]uint32{},
		IPCache:    c.ipcache(m, ids),
	}
	for _, ep := range locals {
		pod := m.Pod(ep.Namespace, ep.Name)
		out.Identity[ep.ID] = ids.PodIdentity(ep.Namespace, ep.Name)
		if pod == nil || !podHasNetwork(pod) {
			out.Flags[ep.ID] = Flags{}
			continue
		}
		var f Flags
		f.Ingress = st.endpoint(out.Entries, ep.ID, pod, false)
		f.Egress = st.endpoint(out.Entries, ep.ID, pod, true)
		out.Flags[ep.ID] = f
	}
	for w := range st.warnings {
		out.Warnings = append(out.Warnings, w)
	}
	slices.Sort(out.Warnings)
	return out
}

// ipcache lists every address the policy side maps.
func (c *Compiler) ipcache(m *Model, ids *Identities) map[netip.Prefix]uint32 {
	out := map[netip.Prefix]uint32{}
	hosts := map[netip.Prefix]bool{}
	for _, p := range m.podsSorted {
		id := ids.PodIdentity(p.Namespace, p.Name)
		for _, a := range metadata.PodIPs(p) {
			pfx := netip.PrefixFrom(a, a.BitLen())
			out[pfx] = id
			hosts[pfx] = true
		}
	}
	for node, addrs := range m.nodeIPs {
		id := IdentityRemoteNode
		if node == c.Node {
			id = IdentityHost
		}
		for _, a := range addrs {
			pfx := netip.PrefixFrom(a, a.BitLen())
			if node != c.Node && m.isGateway(a) {
				continue // another node's gateway is not on the underlay: ipBlocks decide
			}
			out[pfx] = id
			hosts[pfx] = true
		}
	}
	for pfx, id := range ids.cidrs {
		if !hosts[pfx] {
			out[pfx] = id
		}
	}
	return out
}

// endpoint adds the entries of one direction of one endpoint and reports
// whether the direction is enforced.
func (st *compileState) endpoint(entries map[datapath.PolicyKey]datapath.PolicyEntry, epID uint32, pod *corev1.Pod, egress bool) bool {
	m := st.m
	dir := datapath.DirIngress
	if egress {
		dir = datapath.DirEgress
	}
	acc := map[entryKey][]int32{}
	var isolating []int32
	podLabels := labels.Set(pod.Labels)
	for _, p := range m.byNS[pod.Namespace] {
		if egress && !p.egress || !egress && !p.ingress {
			continue
		}
		if !p.selector.Matches(podLabels) {
			continue
		}
		pi := st.policyIndex(p)
		isolating = append(isolating, pi)
		rules := p.inRules
		if egress {
			rules = p.egRules
		}
		for i := range rules {
			st.rule(acc, &rules[i], pod, egress, pi)
		}
	}
	if len(isolating) == 0 {
		return false
	}
	// The pod's own node is always reachable both ways.
	if _, ok := acc[entryKey{peer: IdentityHost}]; !ok {
		acc[entryKey{peer: IdentityHost}] = nil
	}
	all := entryKey{}
	allowAll := acc[all] != nil
	for k, refs := range acc {
		// Report every policy that allows the packet, not only the ones of
		// the most specific key the datapath finds.
		for _, cov := range covering(k) {
			refs = append(refs, acc[cov]...)
		}
		refs = dedupe(refs)
		id := HostRuleID
		if len(refs) > 0 {
			id = st.c.Rules.Intern(st.refsOf(refs))
		}
		entries[datapath.PolicyKey{EndpointID: epID, PeerIdentity: k.peer, Port: k.port, Proto: k.proto, Direction: dir}] =
			datapath.PolicyEntry{RuleID: id}
	}
	if !allowAll {
		// Nothing more specific matched: default deny, reported against
		// the policies that isolate the pod.
		entries[datapath.PolicyKey{EndpointID: epID, Direction: dir}] =
			datapath.PolicyEntry{RuleID: st.c.Rules.Intern(st.refsOf(dedupe(isolating))), Deny: true}
	}
	return true
}

// covering lists the less specific keys the datapath would also consult.
func covering(k entryKey) []entryKey {
	var out []entryKey
	add := func(c entryKey) {
		if c != k {
			out = append(out, c)
		}
	}
	if k.peer != IdentityAny {
		if k.port != 0 {
			add(entryKey{k.peer, 0, k.proto})
		}
		if k.proto != 0 {
			add(entryKey{k.peer, 0, 0})
		}
		if k.port != 0 {
			add(entryKey{0, k.port, k.proto})
		}
		if k.proto != 0 {
			add(entryKey{0, 0, k.proto})
		}
		add(entryKey{})
		return out
	}
	if k.port != 0 {
		add(entryKey{0, 0, k.proto})
	}
	if k.proto != 0 {
		add(entryKey{})
	}
	return out
}

func dedupe(s []int32) []int32 {
	slices.Sort(s)
	return slices.Compact(s)
}

func (st *compileState) policyIndex(p *Policy) int32 {
	i, _ := slices.BinarySearchFunc(st.m.Policies, p, func(a, b *Policy) int { return compareRefs(a.Ref, b.Ref) })
	return int32(i)
}

func (st *compileState) refsOf(idx []int32) []Ref {
	out := make([]Ref, len(idx))
	for i, pi := range idx {
		out[i] = st.m.Policies[pi].Ref
	}
	return out
}

func (st *compileState) warn(format string, args ...any) {
	st.warnings[fmt.Sprintf(format, args...)] = true
}

// rule adds one rule's keys.
func (st *compileState) rule(acc map[entryKey][]int32, r *rule, self *corev1.Pod, egress bool, pi int32) {
	var peers []uint32
	if r.anyPeer {
		peers = []uint32{IdentityAny}
	} else {
		for i := range r.peers {
			peers = append(peers, st.peerIdentities(&r.peers[i])...)
		}
		peers = dedupeU32(peers)
	}
	add := func(k entryKey) { acc[k] = append(acc[k], pi) }
	if r.anyPorts {
		for _, p := range peers {
			add(entryKey{peer: p})
		}
		return
	}
	for i := range r.ports {
		pr := &r.ports[i]
		if pr.name == "" {
			for _, pk := range st.expand(pr) {
				for _, p := range peers {
					add(entryKey{p, pk.port, pk.proto})
				}
			}
			continue
		}
		if !egress {
			// Ingress: the destination is the pod itself.
			for _, port := range namedPorts(self, pr.name, pr.proto) {
				for _, p := range peers {
					add(entryKey{p, port, uint8(pr.proto)})
				}
			}
			continue
		}
		// Egress: resolve on the destination; only pods have named ports.
		dsts := peers
		if r.anyPeer {
			dsts = st.ids.sorted
		}
		for _, p := range dsts {
			for _, port := range st.namedOnIdentity(p, pr.name, pr.proto) {
				add(entryKey{p, port, uint8(pr.proto)})
			}
		}
	}
}

func dedupeU32(s []uint32) []uint32 {
	slices.Sort(s)
	return slices.Compact(s)
}

// namedOnIdentity resolves a port name on the pods of an identity. Pods
// sharing an identity share labels but may differ in ports: the union is
// used (documented limitation).
func (st *compileState) namedOnIdentity(id uint32, name string, proto Proto) []uint16 {
	var out []uint16
	for _, p := range st.ids.pods[id] {
		out = append(out, namedPorts(p, name, proto)...)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func (st *compileState) expand(pr *portRule) []portKey {
	if pr.port == 0 {
		return []portKey{{0, uint8(pr.proto)}}
	}
	if pr.endPort == 0 {
		return []portKey{{pr.port, uint8(pr.proto)}}
	}
	last := int(pr.endPort)
	maxPorts := st.c.MaxRangePorts
	if maxPorts <= 0 {
		maxPorts = DefaultMaxRangePorts
	}
	if last-int(pr.port)+1 > maxPorts {
		st.warn("port range %d-%d/%s cut to %d ports (%d-%d): the rest is denied", pr.port, pr.endPort, pr.proto, maxPorts, pr.port, int(pr.port)+maxPorts-1)
		last = int(pr.port) + maxPorts - 1
	}
	out := make([]portKey, 0, last-int(pr.port)+1)
	for p := int(pr.port); p <= last; p++ {
		out = append(out, portKey{uint16(p), uint8(pr.proto)})
	}
	return out
}

// peerIdentities lists the identities a rule peer matches. Selector peers
// are exact (an identity is namespace + labels). An ipBlock matches the
// CIDR identities of the prefixes inside it and outside its excepts, the
// identities of pods with an address in it, and remote-node when another
// node's address is in it. Pods of one identity that fall partly inside a
// block all get through (documented limitation of identity-based policy).
func (st *compileState) peerIdentities(pr *peerRule) []uint32 {
	if ids, ok := st.peers[pr]; ok {
		return ids
	}
	m := st.m
	var out []uint32
	switch {
	case pr.block != nil:
		b := pr.block
		for pfx, id := range st.ids.cidrs {
			if pfx.Addr().Is4() != b.cidr.Addr().Is4() || pfx.Bits() < b.cidr.Bits() || !b.cidr.Contains(pfx.Addr()) {
				continue
			}
			inside := false
			for _, e := range b.except {
				if pfx.Bits() >= e.Bits() && e.Contains(pfx.Addr()) {
					inside = true
					break
				}
			}
			if !inside {
				out = append(out, id)
			}
		}
		for _, id := range st.ids.sorted {
			for _, p := range st.ids.pods[id] {
				if slices.ContainsFunc(metadata.PodIPs(p), b.contains) {
					out = append(out, id)
					break
				}
			}
		}
		for node, addrs := range m.nodeIPs {
			if node == st.c.Node {
				continue // host is always allowed
			}
			for _, a := range addrs {
				if !m.isGateway(a) && b.contains(a) {
					out = append(out, IdentityRemoteNode)
					break
				}
			}
		}
	default:
		var namespaces []string
		if pr.nsSel == nil {
			namespaces = []string{pr.policy}
		} else {
			for ns := range st.idsByNS {
				if pr.nsSel.Matches(m.nsLabels[ns]) {
					namespaces = append(namespaces, ns)
				}
			}
		}
		for _, ns := range namespaces {
			for _, id := range st.idsByNS[ns] {
				if pr.pods == nil || pr.pods.Matches(labels.Set(st.ids.pods[id][0].Labels)) {
					out = append(out, id)
				}
			}
		}
	}
	out = dedupeU32(out)
	st.peers[pr] = out
	return out
}
