package policy

import (
	"cmp"
	"slices"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// NodeFit is how much of its policy map a node needs for a snapshot: what
// its agent's engine compiles for the node's pods, against the capacity.
type NodeFit struct {
	Node        string `json:"node"`
	Pods        int    `json:"pods"`
	Entries     int    `json:"entries"`
	Capacity    int    `json:"capacity"`
	MemoryBytes int64  `json:"memory_bytes"` // kernel memory of the entries, an upper bound
	Fits        bool   `json:"fits"`
}

// NodeFits compiles snap for every node (a Node object or a pod's
// nodeName) as its agent does and reports,
// by node name, whether its entries fit in a policy map of capacity. A
// node that does not fit refuses the whole snapshot (CapacityError).
func NodeFits(snap *metadata.Snapshot, capacity int) []NodeFit {
	m := NewModel(snap)
	byNode := map[string][]LocalEndpoint{}
	for i, p := range m.Pods() {
		if p.Spec.NodeName != "" {
			byNode[p.Spec.NodeName] = append(byNode[p.Spec.NodeName], LocalEndpoint{ID: uint32(i + 1), Namespace: p.Namespace, Name: p.Name})
		}
	}
	for _, n := range snap.Nodes {
		if _, ok := byNode[n.Name]; !ok {
			byNode[n.Name] = nil
		}
	}
	var out []NodeFit
	for node, locals := range byNode {
		c := NewCompiler(node).Compile(m, locals)
		e := c.NumEntries()
		out = append(out, NodeFit{Node: node, Pods: len(locals), Entries: e, Capacity: capacity,
			MemoryBytes: int64(e) * datapath.PolicyEntryBytes, Fits: e <= capacity})
	}
	slices.SortFunc(out, func(a, b NodeFit) int { return cmp.Compare(a.Node, b.Node) })
	return out
}
