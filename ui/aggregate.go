package ui

import (
	"cmp"
	"maps"
	"slices"
	"sort"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/observer/conndelta"
)

// Limits of the aggregator. Every set it keeps is bounded, so memory stays
// flat however long the relay runs and however many flows it sees.
const (
	DefaultMaxNodes = 20000
	DefaultMaxEdges = 100000
	maxLabels       = 32
	maxPods         = 64
	maxIPs          = 32
	maxPorts        = 32
	maxReasons      = 16
	maxPolicies     = 16
	maxRecentDrops  = 5
	maxServices     = 8
)

// AggregatorConfig bounds an Aggregator. Zero values take the defaults.
type AggregatorConfig struct {
	MaxNodes int
	MaxEdges int
}

// Aggregator folds flows into a service map and remembers what changed since
// the last Flush. It is not safe for concurrent use.
type Aggregator struct {
	maxNodes, maxEdges int

	nodes map[nodeKey]*node
	edges map[edgeKey]*edge

	dirtyNodes   []*node
	dirtyEdges   []*edge
	removedNodes []string
	removedEdges []string

	flows, drops uint64

	conns  *conndelta.Tracker
	active map[*edge]struct{} // edges whose traffic rates are not zero

	// The nodes and edges sorted by id for SnapshotJSON; nil since one was
	// added or removed.
	sortedNodes []*node
	sortedEdges []*edge
}

type node struct {
	id, ns, name, kind string
	labels, pods, ips  set
	ports              set // destination port/protocol this node was reached on
	flowsIn, flowsOut  uint64
	drops              uint64
	edges              int // edges that reference the node
	last               int64
	dirty, gone        bool
	json               []byte // its view, encoded; nil since it changed
}

type edgeKey struct {
	src, dst *node
	port     uint32
	proto    uint8
}

type edge struct {
	key         edgeKey
	id          string
	flows       uint64
	verdicts    [8]uint64 // indexed by flowpb.Verdict
	reasons     map[string]uint64
	policies    map[PolicyRef]uint64
	recentDrops []DropView   // newest last, at most maxRecentDrops
	traffic     *edgeTraffic // nil until a connection flow arrives
	l7          *edgeL7      // nil until an L7 flow arrives
	services    set          // Services (ns/name) the flows went through
	first, last int64
	dirty, gone bool
	json        []byte // its view, encoded; nil since it changed
}

// set is a bounded string set; past its limit it counts what it dropped.
type set struct {
	m    map[string]struct{}
	more int
}

func (s *set) add(v string, limit int) bool {
	if v == "" {
		return false
	}
	if _, ok := s.m[v]; ok {
		return false
	}
	if len(s.m) >= limit {
		s.more++
		return false
	}
	if s.m == nil {
		s.m = map[string]struct{}{}
	}
	s.m[v] = struct{}{}
	return true
}

func (s *set) sorted() []string {
	out := slices.Collect(maps.Keys(s.m))
	sort.Strings(out)
	if out == nil {
		out = []string{}
	}
	return out
}

// NewAggregator returns an empty service map.
func NewAggregator(cfg AggregatorConfig) *Aggregator {
	if cfg.MaxNodes <= 0 {
		cfg.MaxNodes = DefaultMaxNodes
	}
	if cfg.MaxEdges <= 0 {
		cfg.MaxEdges = DefaultMaxEdges
	}
	return &Aggregator{maxNodes: cfg.MaxNodes, maxEdges: cfg.MaxEdges,
		nodes: map[nodeKey]*node{}, edges: map[edgeKey]*edge{}, conns: conndelta.New()}
}

// Len returns the number of nodes and edges.
func (a *Aggregator) Len() (nodes, edges int) { return len(a.nodes), len(a.edges) }

// Counts returns the flows and dropped flows seen.
func (a *Aggregator) Counts() (flows, drops uint64) { return a.flows, a.drops }

// Add folds one flow into the map and returns its edge. A reply is counted
// on the edge of the connection it answers, so that a request and its
// replies make one edge, from the client to the server port.
func (a *Aggregator) Add(f *flowpb.Flow) *edge {
	t := f.GetTime().AsTime().UnixNano()
	if f.GetTime() == nil {
		t = time.Now().UnixNano()
	}
	srcEP, dstEP := f.GetSource(), f.GetDestination()
	srcIP, dstIP := f.GetIP().GetSource(), f.GetIP().GetDestination()
	proto, sport, dport := l4(f)
	port := dport
	srcNames, dstNames := f.GetSourceNames(), f.GetDestinationNames()
	reply := f.GetIsReply().GetValue()
	if reply {
		srcEP, dstEP, srcIP, dstIP, port = dstEP, srcEP, dstIP, srcIP, sport
		srcNames, dstNames = dstNames, srcNames
	}
	src := a.node(srcEP, srcIP, srcNames, t)
	dst := a.node(dstEP, dstIP, dstNames, t)
	k := edgeKey{src: src, dst: dst, port: port, proto: proto}
	e := a.edges[k]
	if e == nil {
		e = &edge{key: k, first: t}
		e.id = src.id + "|" + dst.id + "|" + itoa(uint64(port)) + "/" + protoNames[proto]
		a.edges[k] = e
		a.sortedEdges = nil
		src.edges++
		dst.edges++
		// A new edge is the only way a node gains a port: build the
		// string once per edge, not per flow.
		dst.ports.add(itoa(uint64(port))+"/"+protoNames[proto], maxPorts)
		if len(a.edges) > a.maxEdges {
			a.evictEdges(e)
		}
	}
	e.flows++
	a.flows++
	src.flowsOut++
	dst.flowsIn++
	e.last = max(e.last, t)
	v := f.GetVerdict()
	if int(v) < len(e.verdicts) {
		e.verdicts[v]++
	}
	if v == flowpb.Verdict_DROPPED {
		a.drops++
		src.drops++
		a.addDrop(e, f, t)
	}
	a.addPolicies(e, f)
	// The datapath translated the ClusterIP: the edge goes to the backend
	// workload, and the Service it was reached through labels it.
	svc := f.GetDestinationService()
	if reply {
		svc = f.GetSourceService()
	}
	if svc.GetName() != "" {
		e.services.add(svc.GetNamespace()+"/"+svc.GetName(), maxServices)
	}
	a.addTraffic(e, f, t)
	a.addL7(e, f, t)
	a.touchEdge(e)
	a.touchNode(src)
	a.touchNode(dst)
	if len(a.nodes) > a.maxNodes {
		a.evictNodes(src, dst)
	}
	return e
}

// node returns the map node of an endpoint; names are the flow's FQDNs
// for it, which name a world endpoint (fqdn.go).
func (a *Aggregator) node(ep *flowpb.Endpoint, ip string, names []string, t int64) *node {
	k, kind := endpointKey(ep)
	if kind == KindWorld && len(names) > 0 {
		if n := externalName(names); n != "" {
			k = nodeKey{name: n}
		}
	}
	n := a.nodes[k]
	if n == nil {
		n = &node{id: k.id(), ns: k.ns, name: k.name, kind: kind}
		a.nodes[k] = n
		a.sortedNodes = nil
	}
	n.last = max(n.last, t)
	if n.kind == KindWorld || n.kind == KindHost || n.kind == KindRemoteNode {
		// Reserved peers gather many addresses and pods nobody owns; keep
		// the addresses, they are what a person looks for.
		n.ips.add(ip, maxIPs)
		return n
	}
	if len(n.labels.m) == 0 {
		for _, l := range ep.GetLabels() {
			n.labels.add(l, maxLabels)
		}
	}
	n.pods.add(ep.GetPodName(), maxPods)
	n.ips.add(ip, maxIPs)
	return n
}

func (a *Aggregator) addDrop(e *edge, f *flowpb.Flow, t int64) {
	reason := dropReason(f)
	if reason == "" {
		reason = "unknown"
	}
	if e.reasons == nil {
		e.reasons = map[string]uint64{}
	}
	if _, ok := e.reasons[reason]; ok || len(e.reasons) < maxReasons {
		e.reasons[reason]++
	}
	d := DropView{Time: t / 1e6, Reason: reason, Node: f.GetNodeName(), Summary: f.GetSummary(),
		Source: f.GetSource().GetPodName(), Destination: f.GetDestination().GetPodName()}
	for _, p := range f.GetEgressDeniedBy() {
		d.Policies = append(d.Policies, policyName(p))
	}
	for _, p := range f.GetIngressDeniedBy() {
		d.Policies = append(d.Policies, policyName(p))
	}
	if len(e.recentDrops) == maxRecentDrops {
		copy(e.recentDrops, e.recentDrops[1:])
		e.recentDrops = e.recentDrops[:maxRecentDrops-1]
	}
	e.recentDrops = append(e.recentDrops, d)
}

func (a *Aggregator) addPolicies(e *edge, f *flowpb.Flow) {
	add := func(ps []*flowpb.Policy, dir, effect string) {
		for _, p := range ps {
			r := PolicyRef{Name: p.GetName(), Namespace: p.GetNamespace(), Kind: p.GetKind(), Direction: dir, Effect: effect}
			if e.policies == nil {
				e.policies = map[PolicyRef]uint64{}
			}
			if _, ok := e.policies[r]; ok || len(e.policies) < maxPolicies {
				e.policies[r]++
			}
		}
	}
	add(f.GetEgressDeniedBy(), "egress", "deny")
	add(f.GetIngressDeniedBy(), "ingress", "deny")
	add(f.GetEgressAllowedBy(), "egress", "allow")
	add(f.GetIngressAllowedBy(), "ingress", "allow")
}

func policyName(p *flowpb.Policy) string {
	if p.GetNamespace() != "" {
		return p.GetNamespace() + "/" + p.GetName()
	}
	return p.GetName()
}

// touchNode and touchEdge are called on every change of a node or edge:
// they drop its encoded view and mark it for the next Flush.
func (a *Aggregator) touchNode(n *node) {
	n.json = nil
	if !n.dirty {
		n.dirty = true
		a.dirtyNodes = append(a.dirtyNodes, n)
	}
}

func (a *Aggregator) touchEdge(e *edge) {
	e.json = nil
	if !e.dirty {
		e.dirty = true
		a.dirtyEdges = append(a.dirtyEdges, e)
	}
}

// evictEdges drops the least recently seen sixteenth of the edges (never
// keep), so that eviction costs O(1) per added edge, amortized.
func (a *Aggregator) evictEdges(keep *edge) {
	all := make([]*edge, 0, len(a.edges))
	for _, e := range a.edges {
		if e != keep {
			all = append(all, e)
		}
	}
	slices.SortFunc(all, func(x, y *edge) int { return cmp.Compare(x.last, y.last) })
	for _, e := range all[:max(len(a.edges)/16, 1)] {
		a.removeEdge(e)
	}
}

func (a *Aggregator) removeEdge(e *edge) {
	delete(a.edges, e.key)
	a.sortedEdges = nil
	e.key.src.edges--
	e.key.dst.edges--
	a.removedEdges = append(a.removedEdges, e.id)
	e.gone = true // Flush skips it
}

// evictNodes drops the least recently seen sixteenth of the nodes (never
// the two of the flow being added) with their edges.
func (a *Aggregator) evictNodes(keep1, keep2 *node) {
	all := make([]*node, 0, len(a.nodes))
	for _, n := range a.nodes {
		if n != keep1 && n != keep2 {
			all = append(all, n)
		}
	}
	slices.SortFunc(all, func(x, y *node) int { return cmp.Compare(x.last, y.last) })
	gone := map[*node]bool{}
	for _, n := range all[:max(len(a.nodes)/16, 1)] {
		gone[n] = true
		n.gone = true
		delete(a.nodes, nodeKey{n.ns, n.name})
		a.sortedNodes = nil
		a.removedNodes = append(a.removedNodes, n.id)
	}
	for _, e := range a.edges {
		if gone[e.key.src] || gone[e.key.dst] {
			a.removeEdge(e)
		}
	}
}

// Delta is what changed in the map: nodes and edges to add or replace, and
// the ids of those that were evicted.
type Delta struct {
	Nodes        []NodeView `json:"nodes"`
	Edges        []EdgeView `json:"edges"`
	RemovedNodes []string   `json:"removedNodes,omitempty"`
	RemovedEdges []string   `json:"removedEdges,omitempty"`
}

// Empty reports a delta with nothing in it.
func (d *Delta) Empty() bool {
	return len(d.Nodes) == 0 && len(d.Edges) == 0 && len(d.RemovedNodes) == 0 && len(d.RemovedEdges) == 0
}

// Flush returns what changed since the previous Flush.
func (a *Aggregator) Flush() Delta {
	d := Delta{Nodes: make([]NodeView, 0, len(a.dirtyNodes)), Edges: make([]EdgeView, 0, len(a.dirtyEdges)),
		RemovedNodes: a.removedNodes, RemovedEdges: a.removedEdges}
	for _, n := range a.dirtyNodes {
		n.dirty = false
		if n.gone {
			continue
		}
		d.Nodes = append(d.Nodes, n.view())
	}
	for _, e := range a.dirtyEdges {
		e.dirty = false
		if e.gone {
			continue
		}
		d.Edges = append(d.Edges, e.view())
	}
	a.dirtyNodes, a.dirtyEdges, a.removedNodes, a.removedEdges = a.dirtyNodes[:0], a.dirtyEdges[:0], nil, nil
	return d
}

// Snapshot returns the whole map, sorted by id. Pending changes stay pending.
func (a *Aggregator) Snapshot() Delta {
	d := Delta{Nodes: make([]NodeView, 0, len(a.nodes)), Edges: make([]EdgeView, 0, len(a.edges))}
	for _, n := range a.nodes {
		d.Nodes = append(d.Nodes, n.view())
	}
	for _, e := range a.edges {
		d.Edges = append(d.Edges, e.view())
	}
	slices.SortFunc(d.Nodes, func(x, y NodeView) int { return cmp.Compare(x.ID, y.ID) })
	slices.SortFunc(d.Edges, func(x, y EdgeView) int { return cmp.Compare(x.ID, y.ID) })
	return d
}

// SnapshotJSON returns Snapshot encoded as JSON. Each node and edge keeps
// its encoded view until it changes, so a browser's first message costs
// the server little more than a copy of the map: on a big cluster most of
// it is idle at any moment. An edge's rates are those of when it last
// changed or rolled its window (Decay), as on the browsers that follow
// the deltas.
func (a *Aggregator) SnapshotJSON() []byte {
	if a.sortedNodes == nil {
		a.sortedNodes = slices.SortedFunc(maps.Values(a.nodes), func(x, y *node) int { return cmp.Compare(x.id, y.id) })
	}
	if a.sortedEdges == nil {
		a.sortedEdges = slices.SortedFunc(maps.Values(a.edges), func(x, y *edge) int { return cmp.Compare(x.id, y.id) })
	}
	nodes, edges := a.sortedNodes, a.sortedEdges
	size := 32
	for _, n := range nodes {
		if n.json == nil {
			n.json = mustJSON(n.view())
		}
		size += len(n.json) + 1
	}
	for _, e := range edges {
		if e.json == nil {
			e.json = mustJSON(e.view())
		}
		size += len(e.json) + 1
	}
	b := make([]byte, 0, size)
	b = append(b, `{"nodes":[`...)
	for i, n := range nodes {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, n.json...)
	}
	b = append(b, `],"edges":[`...)
	for i, e := range edges {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, e.json...)
	}
	return append(b, "]}"...)
}

// NodeView is a node as the browser sees it.
type NodeView struct {
	ID        string   `json:"id"`
	Namespace string   `json:"ns"`
	Name      string   `json:"name"`
	Kind      string   `json:"kind"`
	Labels    []string `json:"labels"`
	Pods      []string `json:"pods"`
	IPs       []string `json:"ips"`
	Ports     []string `json:"ports"`
	FlowsIn   uint64   `json:"flowsIn"`
	FlowsOut  uint64   `json:"flowsOut"`
	Drops     uint64   `json:"drops"`
	Last      int64    `json:"last"` // unix ms
}

func (n *node) view() NodeView {
	return NodeView{ID: n.id, Namespace: n.ns, Name: n.name, Kind: n.kind,
		Labels: n.labels.sorted(), Pods: n.pods.sorted(), IPs: n.ips.sorted(), Ports: n.ports.sorted(),
		FlowsIn: n.flowsIn, FlowsOut: n.flowsOut, Drops: n.drops, Last: n.last / 1e6}
}

// EdgeView is an edge as the browser sees it.
type EdgeView struct {
	ID          string            `json:"id"`
	Source      string            `json:"src"`
	Destination string            `json:"dst"`
	Port        uint32            `json:"port"`
	Protocol    string            `json:"proto"`
	Flows       uint64            `json:"flows"`
	Verdicts    map[string]uint64 `json:"verdicts"`
	DropReasons map[string]uint64 `json:"dropReasons,omitempty"`
	Policies    []PolicyRef       `json:"policies,omitempty"`
	RecentDrops []DropView        `json:"recentDrops,omitempty"`
	Traffic     *TrafficView      `json:"traffic,omitempty"`  // edges with connection counters only
	L7          *L7View           `json:"l7,omitempty"`       // edges with L7 flows only
	Services    []string          `json:"services,omitempty"` // ns/name of the Services its flows went through
	First       int64             `json:"first"`              // unix ms
	Last        int64             `json:"last"`
}

// PolicyRef is a policy that allowed or denied flows of an edge.
type PolicyRef struct {
	Name      string `json:"name"`
	Namespace string `json:"ns,omitempty"`
	Kind      string `json:"kind,omitempty"`
	Direction string `json:"dir"`    // ingress or egress
	Effect    string `json:"effect"` // allow or deny
	Flows     uint64 `json:"flows"`
}

// DropView is one recent drop on an edge.
type DropView struct {
	Time        int64    `json:"t"` // unix ms
	Reason      string   `json:"reason"`
	Policies    []string `json:"policies,omitempty"`
	Node        string   `json:"node,omitempty"`
	Source      string   `json:"srcPod,omitempty"`
	Destination string   `json:"dstPod,omitempty"`
	Summary     string   `json:"summary,omitempty"`
}

func (e *edge) view() EdgeView {
	v := EdgeView{ID: e.id, Source: e.key.src.id, Destination: e.key.dst.id, Port: e.key.port,
		Protocol: protoNames[e.key.proto], Flows: e.flows, Verdicts: map[string]uint64{},
		First: e.first / 1e6, Last: e.last / 1e6}
	for i, c := range e.verdicts {
		if c > 0 {
			v.Verdicts[flowpb.Verdict(i).String()] = c
		}
	}
	if len(e.reasons) > 0 {
		v.DropReasons = maps.Clone(e.reasons)
	}
	if len(e.services.m) > 0 {
		v.Services = e.services.sorted()
	}
	for r, c := range e.policies {
		r.Flows = c
		v.Policies = append(v.Policies, r)
	}
	slices.SortFunc(v.Policies, func(x, y PolicyRef) int {
		return cmp.Or(cmp.Compare(x.Effect, y.Effect), cmp.Compare(x.Direction, y.Direction),
			cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Name, y.Name))
	})
	v.RecentDrops = slices.Clone(e.recentDrops)
	if e.traffic != nil {
		v.Traffic = e.traffic.view(max(e.last, e.traffic.now), e.first)
	}
	if e.l7 != nil {
		v.L7 = e.l7.view(max(e.last, e.l7.now), e.first)
	}
	return v
}
