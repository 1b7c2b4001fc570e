package policy

import (
	"strings"
	"sync"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// HostRuleID is the rule reported for traffic between a pod and its own
// node when no policy rule covers it; it names no policy.
const HostRuleID uint32 = 1

// minRuleID leaves room for reserved rule ids.
const minRuleID uint32 = 16

// RuleTable maps the rule ids written to the policy map to the set of
// policies they stand for, so flows can name them (allowed_by / denied_by).
// An id is a hash of its policy set (probing on collision), so ids mostly
// stay the same across agent restarts. Ids are never reused for another
// set while the table lives. Safe for concurrent use.
type RuleTable struct {
	mu   sync.RWMutex
	ids  map[string]uint32
	refs map[uint32][]Ref
	pb   map[uint32][]*flowpb.Policy
}

// NewRuleTable returns an empty table.
func NewRuleTable() *RuleTable {
	return &RuleTable{ids: map[string]uint32{}, refs: map[uint32][]Ref{}, pb: map[uint32][]*flowpb.Policy{}}
}

func refsKey(refs []Ref) string {
	var b strings.Builder
	for _, r := range refs {
		b.WriteString(r.Kind)
		b.WriteByte(0)
		b.WriteString(r.Namespace)
		b.WriteByte(0)
		b.WriteString(r.Name)
		b.WriteByte(1)
	}
	return b.String()
}

// Intern returns the id of a sorted set of policies.
func (t *RuleTable) Intern(refs []Ref) uint32 {
	key := refsKey(refs)
	t.mu.RLock()
	id, ok := t.ids[key]
	t.mu.RUnlock()
	if ok {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.ids[key]; ok {
		return id
	}
	id = hashInto(key, minRuleID, 1<<31-1)
	for _, taken := t.refs[id]; taken; _, taken = t.refs[id] {
		id++
		if id > 1<<31-1 {
			id = minRuleID
		}
	}
	t.ids[key] = id
	t.refs[id] = refs
	pols := make([]*flowpb.Policy, len(refs))
	for i, r := range refs {
		pols[i] = &flowpb.Policy{Name: r.Name, Namespace: r.Namespace, Kind: r.Kind}
	}
	t.pb[id] = pols
	return id
}

// Refs returns the policies of a rule id (nil for unknown or reserved ids).
func (t *RuleTable) Refs(id uint32) []Ref {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.refs[id]
}

// ResolvePolicy implements the observer's PolicyResolver. The returned
// slice is shared: callers must not modify it.
func (t *RuleTable) ResolvePolicy(id uint32) []*flowpb.Policy {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.pb[id]
}
