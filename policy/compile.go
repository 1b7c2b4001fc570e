package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// LocalEndpoint is one pod endpoint of this node.
type LocalEndpoint struct {
	ID        uint32 // datapath endpoint id
	Namespace string
	Name      string
}

// Flags are an endpoint's enforcement switches.
type Flags struct{ Ingress, Egress bool }

// EntryKey is a policy-map key without the endpoint id. A port names the
// aligned block of 2^PortWildBits ports from Port (datapath.PolicyKey).
type EntryKey struct {
	Peer         uint32
	Port         uint16
	PortWildBits uint8
	Proto        uint8
	Direction    uint8
}

// EndpointEntries is one endpoint's part of the policy map. Endpoints of
// the same identity and container ports share one (read-only) map.
type EndpointEntries map[EntryKey]datapath.PolicyEntry

// CompiledEndpoint is what one local endpoint gets.
type CompiledEndpoint struct {
	Identity uint32
	Flags    Flags
	Entries  EndpointEntries // nil when nothing is enforced
}

// Compiled is what the datapath of one node needs for one snapshot.
type Compiled struct {
	Generation string
	Model      *Model
	Identities *Identities
	// Endpoints by endpoint id; endpoints whose pod the snapshot lacks get
	// no flags and contract.IdentityInit.
	Endpoints map[uint32]*CompiledEndpoint
	// IPCache is every prefix the node must know: all pods' addresses,
	// node addresses (host or remote-node), ipBlock prefixes.
	IPCache map[netip.Prefix]uint32
	// Groups and Recomputed count the distinct (identity, ports) groups of
	// local endpoints and how many of them this compile had to compute
	// (the others were reused from the previous compile).
	Groups, Recomputed int
}

// NumEntries is the size of the node's policy map.
func (c *Compiled) NumEntries() int {
	n := 0
	for _, e := range c.Endpoints {
		n += len(e.Entries)
	}
	return n
}

// PolicyMap is the whole policy map, as the datapath holds it.
func (c *Compiled) PolicyMap() map[datapath.PolicyKey]datapath.PolicyEntry {
	out := make(map[datapath.PolicyKey]datapath.PolicyEntry, c.NumEntries())
	for id, e := range c.Endpoints {
		for k, v := range e.Entries {
			out[k.policyKey(id)] = v
		}
	}
	return out
}

func (k EntryKey) policyKey(ep uint32) datapath.PolicyKey {
	return datapath.PolicyKey{EndpointID: ep, PeerIdentity: k.Peer, Port: k.Port, PortWildBits: k.PortWildBits, Proto: k.Proto, Direction: k.Direction}
}

// Lookup is the datapath's lookup on endpoint epID's compiled entries.
func (c *Compiled) Lookup(epID, peer uint32, port uint16, proto, dir uint8) Verdict {
	e := c.Endpoints[epID]
	if e == nil {
		return Verdict{}
	}
	return lookupEntries(e.Entries, peer, port, proto, dir)
}

// Compiler turns models into datapath entries for one node. It remembers
// its previous compile: when only policies changed, endpoint groups that
// no changed policy selects keep their entries without recomputation.
type Compiler struct {
	Node  string
	Rules *RuleTable

	memo *compileMemo
}

type compileMemo struct {
	pods       []*corev1.Pod
	namespaces []*corev1.Namespace
	nodes      []*corev1.Node
	policies   map[Ref]*Policy
	parsed     map[*networkingv1.NetworkPolicy]*Policy
	ids        *Identities
	groups     map[string]*groupResult
}

type groupResult struct {
	pod     *corev1.Pod // a representative
	flags   Flags
	entries EndpointEntries
}

// NewCompiler returns a compiler for node with a fresh rule table.
func NewCompiler(node string) *Compiler {
	return &Compiler{Node: node, Rules: NewRuleTable()}
}

// NewModel builds the model of snap, reusing the policies the compiler
// has already parsed.
func (c *Compiler) NewModel(snap *metadata.Snapshot) *Model {
	if c.memo == nil {
		return NewModel(snap)
	}
	return newModel(snap, c.memo.parsed)
}

// portKey is a protocol and a port block (datapath.PortBlock), or any
// port (port 0).
type portKey struct {
	port  uint16
	wild  uint8
	proto uint8
}

type entryKey struct {
	peer uint32
	portKey
}

// contains reports whether every packet that k matches, a matches too
// (ignoring the peer): any protocol ⊇ any port of a protocol ⊇ a port
// block ⊇ the blocks inside it. Blocks nest or are disjoint.
func (a portKey) contains(k portKey) bool {
	switch {
	case a.proto == 0:
		return true
	case a.proto != k.proto:
		return false
	case a.port == 0:
		return true
	case k.port == 0:
		return false
	default:
		return k.wild <= a.wild && k.port&^(uint16(1)<<a.wild-1) == a.port
	}
}

// compileState holds per-snapshot caches shared by all endpoints.
type compileState struct {
	c        *Compiler
	m        *Model
	ids      *Identities
	peers    map[*peerRule][]uint32
	idsByNS  map[string][]uint32
	named    map[namedKey][]uint16
	podIPs   map[uint32][]netip.Addr
	internID map[string]uint32
	acc      map[entryKey][]int32 // scratch of endpoint()
	buf      []int32
}

type namedKey struct {
	id    uint32
	name  string
	proto Proto
}

func sameSlice[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// groupKey: endpoints with equal namespace, labels and container ports
// get equal entries.
func groupKey(p *corev1.Pod) string {
	var b strings.Builder
	b.WriteString(IdentityKey(p.Namespace, p.Labels))
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			fmt.Fprintf(&b, "\x01%s/%d/%s", cp.Name, cp.ContainerPort, cp.Protocol)
		}
	}
	return b.String()
}

// Compile computes the node's entries for model m and its local endpoints.
func (c *Compiler) Compile(m *Model, locals []LocalEndpoint) *Compiled {
	snap := m.Snapshot
	memo := c.memo
	sameObjects := memo != nil && sameSlice(memo.pods, snap.Pods) && sameSlice(memo.namespaces, snap.Namespaces) && sameSlice(memo.nodes, snap.Nodes)
	var ids *Identities
	cidrs := computeCIDRIdentities(m)
	if sameObjects {
		ids = memo.ids.withCIDRs(cidrs)
	} else {
		ids = computePodIdentities(m)
		ids.cidrs = cidrs
	}
	reuse := sameObjects && maps.Equal(memo.ids.cidrs, cidrs)
	// Policies that changed since the memo: the groups they select (before
	// or after) are recomputed.
	newPolicies := make(map[Ref]*Policy, len(m.Policies))
	for _, p := range m.Policies {
		newPolicies[p.Ref] = p
	}
	var changed []*Policy
	if reuse {
		for r, p := range newPolicies {
			if old := memo.policies[r]; old != p {
				changed = append(changed, p)
				if old != nil {
					changed = append(changed, old)
				}
			}
		}
		for r, old := range memo.policies {
			if newPolicies[r] == nil {
				changed = append(changed, old)
			}
		}
	}

	st := &compileState{c: c, m: m, ids: ids, peers: map[*peerRule][]uint32{}, idsByNS: map[string][]uint32{},
		named: map[namedKey][]uint16{}, podIPs: map[uint32][]netip.Addr{}, internID: map[string]uint32{}}
	for _, id := range ids.sorted {
		ns := ids.pods[id][0].Namespace
		st.idsByNS[ns] = append(st.idsByNS[ns], id)
	}
	out := &Compiled{
		Generation: snap.Generation,
		Model:      m,
		Identities: ids,
		Endpoints:  make(map[uint32]*CompiledEndpoint, len(locals)),
		IPCache:    c.ipcache(m, ids),
	}
	groups := map[string]*groupResult{}
	for _, ep := range locals {
		ce := &CompiledEndpoint{Identity: ids.PodIdentity(ep.Namespace, ep.Name)}
		out.Endpoints[ep.ID] = ce
		pod := m.Pod(ep.Namespace, ep.Name)
		if pod == nil || !podHasNetwork(pod) {
			continue
		}
		gk := groupKey(pod)
		g := groups[gk]
		if g == nil {
			if reuse {
				if old := memo.groups[gk]; old != nil && !selectedByAny(changed, old.pod) {
					g = old
				}
			}
			if g == nil {
				g = &groupResult{pod: pod, entries: EndpointEntries{}}
				g.flags.Ingress = st.endpoint(g.entries, pod, false)
				g.flags.Egress = st.endpoint(g.entries, pod, true)
				if len(g.entries) == 0 {
					g.entries = nil
				}
				out.Recomputed++
			}
			groups[gk] = g
		}
		ce.Flags, ce.Entries = g.flags, g.entries
	}
	out.Groups = len(groups)
	parsed := make(map[*networkingv1.NetworkPolicy]*Policy, len(m.Policies))
	for _, p := range m.Policies {
		parsed[p.Source] = p
	}
	c.memo = &compileMemo{pods: snap.Pods, namespaces: snap.Namespaces, nodes: snap.Nodes,
		policies: newPolicies, parsed: parsed, ids: ids, groups: groups}
	return out
}

func selectedByAny(ps []*Policy, pod *corev1.Pod) bool {
	for _, p := range ps {
		if p.Ref.Namespace == pod.Namespace && p.selector.Matches(labels.Set(pod.Labels)) {
			return true
		}
	}
	return false
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
		id := contract.IdentityRemoteNode
		if node == c.Node {
			id = contract.IdentityHost
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
func (st *compileState) endpoint(entries EndpointEntries, pod *corev1.Pod, egress bool) bool {
	m := st.m
	dir := contract.DirectionIngress
	if egress {
		dir = contract.DirectionEgress
	}
	if st.acc == nil {
		st.acc = map[entryKey][]int32{}
	}
	acc := st.acc
	clear(acc)
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
	if _, ok := acc[entryKey{peer: contract.IdentityHost}]; !ok {
		acc[entryKey{peer: contract.IdentityHost}] = nil
	}
	all := entryKey{}
	allowAll := acc[all] != nil
	var maxWild uint8
	for k, refs := range acc {
		acc[k] = dedupe(refs)
		maxWild = max(maxWild, k.wild)
	}
	refine(acc)
	var cov []entryKey
	buf := st.buf[:0]
	for k, refs := range acc {
		// Report every policy that allows the packet, not only the ones of
		// the most specific key the datapath finds.
		buf = append(buf[:0], refs...)
		cov = covering(k, maxWild, cov[:0])
		for _, c := range cov {
			buf = append(buf, acc[c]...)
		}
		if len(cov) > 0 {
			buf = dedupe(buf)
		}
		refs := buf
		id := HostRuleID
		if len(refs) > 0 {
			id = st.intern(refs)
		}
		entries[EntryKey{Peer: k.peer, Port: k.port, PortWildBits: k.wild, Proto: k.proto, Direction: dir}] = datapath.PolicyEntry{RuleID: id}
	}
	if !allowAll {
		// Nothing more specific matched: default deny, reported against
		// the policies that isolate the pod.
		entries[EntryKey{Direction: dir}] = datapath.PolicyEntry{RuleID: st.intern(dedupe(isolating)), Deny: true}
	}
	st.buf = buf
	return true
}

// refine adds, for a peer's key and an any-peer key strictly inside it
// (a port inside the peer's range, or inside its any-protocol entry), the
// peer's key for the inner ports. The datapath stops at the peer's entry,
// so without it the packets of the inner ports would name only the
// peer's policies, not the any-peer ones that allow them too. The host
// entry is left alone: it always allows, with its own rule.
func refine(acc map[entryKey][]int32) {
	var inner []portKey
	for k := range acc {
		if k.peer == contract.IdentityUnknown && k.proto != 0 {
			inner = append(inner, k.portKey)
		}
	}
	if len(inner) == 0 {
		return
	}
	var add []entryKey
	for k := range acc {
		if k.peer == contract.IdentityUnknown || k.peer == contract.IdentityHost {
			continue
		}
		for _, in := range inner {
			if in != k.portKey && k.contains(in) {
				add = append(add, entryKey{k.peer, in})
			}
		}
	}
	for _, k := range add {
		if _, ok := acc[k]; !ok {
			acc[k] = nil
		}
	}
}

// covering appends to out the other keys a packet that matches k also
// matches: for k's peer and for any peer, the port blocks around k's (up
// to maxWild, the widest block there is), its protocol's any port, any
// protocol.
func covering(k entryKey, maxWild uint8, out []entryKey) []entryKey {
	var chain [16 + 2]portKey
	n := 0
	chain[n] = k.portKey
	n++
	if k.port != 0 {
		for w := k.wild + 1; w <= maxWild; w++ {
			first := k.port &^ (uint16(1)<<w - 1)
			if first == 0 {
				break // port 0 is any port: no block starts there
			}
			chain[n] = portKey{first, w, k.proto}
			n++
		}
		chain[n] = portKey{proto: k.proto}
		n++
	}
	if k.proto != 0 {
		chain[n] = portKey{}
		n++
	}
	peers := [2]uint32{k.peer, contract.IdentityUnknown}
	np := 2
	if k.peer == contract.IdentityUnknown {
		np = 1
	}
	for _, p := range peers[:np] {
		for _, pk := range chain[:n] {
			if c := (entryKey{p, pk}); c != k {
				out = append(out, c)
			}
		}
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

// intern maps a set of policy indexes to its rule id, memoised per compile.
func (st *compileState) intern(idx []int32) uint32 {
	b := make([]byte, 0, 4*len(idx))
	for _, i := range idx {
		b = append(b, byte(i), byte(i>>8), byte(i>>16), byte(i>>24))
	}
	if id, ok := st.internID[string(b)]; ok {
		return id
	}
	id := st.c.Rules.Intern(st.refsOf(idx))
	st.internID[string(b)] = id
	return id
}

func (st *compileState) refsOf(idx []int32) []Ref {
	out := make([]Ref, len(idx))
	for i, pi := range idx {
		out[i] = st.m.Policies[pi].Ref
	}
	return out
}

// rule adds one rule's keys.
func (st *compileState) rule(acc map[entryKey][]int32, r *rule, self *corev1.Pod, egress bool, pi int32) {
	var peers []uint32
	if r.anyPeer {
		peers = []uint32{contract.IdentityUnknown}
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
			for _, pk := range expand(pr) {
				for _, p := range peers {
					add(entryKey{p, pk})
				}
			}
			continue
		}
		if !egress {
			// Ingress: the destination is the pod itself.
			for _, port := range namedPorts(self, pr.name, pr.proto) {
				for _, p := range peers {
					add(entryKey{p, portKey{port: port, proto: uint8(pr.proto)}})
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
				add(entryKey{p, portKey{port: port, proto: uint8(pr.proto)}})
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
	k := namedKey{id, name, proto}
	if v, ok := st.named[k]; ok {
		return v
	}
	var out []uint16
	defer func() { st.named[k] = out }()
	for _, p := range st.ids.pods[id] {
		out = append(out, namedPorts(p, name, proto)...)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	return out
}

// expand gives a numeric port rule's keys: any port, one port, or the
// fewest aligned blocks that make up its endPort range exactly.
func expand(pr *portRule) []portKey {
	proto := uint8(pr.proto)
	if pr.port == 0 {
		return []portKey{{proto: proto}}
	}
	if pr.endPort == 0 {
		return []portKey{{port: pr.port, proto: proto}}
	}
	blocks := datapath.PortBlocks(pr.port, pr.endPort)
	out := make([]portKey, len(blocks))
	for i, b := range blocks {
		out[i] = portKey{b.Port, b.WildBits, proto}
	}
	return out
}

// identityIPs lists the addresses of an identity's pods.
func (st *compileState) identityIPs(id uint32) []netip.Addr {
	if v, ok := st.podIPs[id]; ok {
		return v
	}
	var out []netip.Addr
	for _, p := range st.ids.pods[id] {
		out = append(out, metadata.PodIPs(p)...)
	}
	st.podIPs[id] = out
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
			if slices.ContainsFunc(st.identityIPs(id), b.contains) {
				out = append(out, id)
			}
		}
		for node, addrs := range m.nodeIPs {
			if node == st.c.Node {
				continue // host is always allowed
			}
			for _, a := range addrs {
				if !m.isGateway(a) && b.contains(a) {
					out = append(out, contract.IdentityRemoteNode)
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
