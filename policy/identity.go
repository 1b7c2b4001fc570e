package policy

import (
	"hash/fnv"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/loupe-project/loupe/contract"
	corev1 "k8s.io/api/core/v1"
)

// Reserved identities are contract's (Cilium's numbering). The datapath
// knows 0 (any, in policy keys) and 2 (world: an address missing from the
// ipcache); the compiler gives 1 to this node's addresses and its pod
// gateways, 5 to a local pod whose labels are not known yet, and 6 to
// other nodes' addresses.

// Identity ranges. Pod identities are cluster-wide: every agent derives the
// same numbers from the same snapshot. CIDR identities (for ipBlock
// prefixes) carry bit 24, like Cilium's local identities.
const (
	MinPodIdentity  = contract.MinPodIdentity
	MaxPodIdentity  = contract.MaxPodIdentity
	CIDRIdentityBit = contract.CIDRIdentityBit
)

// Identities is the identity assignment of one snapshot.
//
// A pod's identity is a function of its namespace and labels. The keys of
// all pods of the snapshot are sorted; each key hashes (FNV-1a 64) into
// [MinPodIdentity, MaxPodIdentity] and, if that number is taken by a key
// earlier in the order, takes the next free one (wrapping). So the result
// depends only on the set of keys, and every agent that sees the same
// snapshot computes the same numbers. A collision moves only the later key
// of the colliding pair; CIDR identities are assigned the same way over the
// sorted ipBlock prefixes, in the CIDR range.
type Identities struct {
	byKey  map[string]uint32
	byPod  map[string]uint32 // ns/name
	pods   map[uint32][]*corev1.Pod
	cidrs  map[netip.Prefix]uint32
	sorted []uint32 // pod identities, ascending
}

// IdentityKey is the canonical form of (namespace, labels).
func IdentityKey(namespace string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("k8s:io.kubernetes.pod.namespace=")
	b.WriteString(namespace)
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString("k8s:")
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
	}
	return b.String()
}

func hashInto(key string, lo, hi uint32) uint32 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return lo + uint32(h.Sum64()%uint64(hi-lo+1))
}

// assign gives each sorted key a number in [lo, hi], probing on collision.
func assign(keys []string, lo, hi uint32) map[string]uint32 {
	out := make(map[string]uint32, len(keys))
	used := make(map[uint32]bool, len(keys))
	for _, k := range keys {
		id := hashInto(k, lo, hi)
		for used[id] {
			id++
			if id > hi {
				id = lo
			}
		}
		used[id] = true
		out[k] = id
	}
	return out
}

// ComputeIdentities assigns identities to the model's pods and ipBlocks.
func ComputeIdentities(m *Model) *Identities {
	ids := computePodIdentities(m)
	ids.cidrs = computeCIDRIdentities(m)
	return ids
}

func computePodIdentities(m *Model) *Identities {
	ids := &Identities{byPod: map[string]uint32{}, pods: map[uint32][]*corev1.Pod{}}
	podKey := map[string]string{}
	keySet := map[string]bool{}
	for _, p := range m.Snapshot.Pods {
		if p.Spec.HostNetwork {
			continue
		}
		k := IdentityKey(p.Namespace, p.Labels)
		podKey[p.Namespace+"/"+p.Name] = k
		keySet[k] = true
	}
	keys := make([]string, 0, len(keySet))
	for k := range keySet {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	ids.byKey = assign(keys, MinPodIdentity, MaxPodIdentity)
	for pod, k := range podKey {
		ids.byPod[pod] = ids.byKey[k]
	}
	for _, p := range m.podsSorted {
		id := ids.byPod[p.Namespace+"/"+p.Name]
		ids.pods[id] = append(ids.pods[id], p)
	}
	for id := range ids.pods {
		ids.sorted = append(ids.sorted, id)
	}
	slices.Sort(ids.sorted)
	return ids
}

func computeCIDRIdentities(m *Model) map[netip.Prefix]uint32 {
	out := map[netip.Prefix]uint32{}
	prefixes := map[string]netip.Prefix{}
	for _, p := range m.Policies {
		for _, rules := range [][]rule{p.inRules, p.egRules} {
			for _, r := range rules {
				for _, pr := range r.peers {
					if pr.block == nil {
						continue
					}
					prefixes[pr.block.cidr.String()] = pr.block.cidr
					for _, e := range pr.block.except {
						prefixes[e.String()] = e
					}
				}
			}
		}
	}
	pkeys := make([]string, 0, len(prefixes))
	for k := range prefixes {
		pkeys = append(pkeys, k)
	}
	sort.Strings(pkeys)
	for k, id := range assign(pkeys, CIDRIdentityBit, CIDRIdentityBit|MaxPodIdentity) {
		out[prefixes[k]] = id
	}
	return out
}

// withCIDRs returns a copy sharing the pod part, with other CIDR identities.
func (ids *Identities) withCIDRs(cidrs map[netip.Prefix]uint32) *Identities {
	cp := *ids
	cp.cidrs = cidrs
	return &cp
}

// Pod returns the identity of pod namespace/name.
func (ids *Identities) Pod(namespace, name string) (uint32, bool) {
	id, ok := ids.byPod[namespace+"/"+name]
	return id, ok
}

// PodIdentity is Pod for the agent's Register: contract.IdentityInit when the
// snapshot does not have the pod yet.
func (ids *Identities) PodIdentity(namespace, name string) uint32 {
	if id, ok := ids.Pod(namespace, name); ok {
		return id
	}
	return contract.IdentityInit
}

// PodsOf lists the networked pods that have identity id.
func (ids *Identities) PodsOf(id uint32) []*corev1.Pod { return ids.pods[id] }

// CIDRs returns the ipBlock prefixes and their identities.
func (ids *Identities) CIDRs() map[netip.Prefix]uint32 { return ids.cidrs }
