package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// Datapath is the part of the datapath the engine writes.
type Datapath interface {
	// UpsertPolicies writes entries in order (batched system calls).
	UpsertPolicies([]datapath.PolicyKey, []datapath.PolicyEntry) error
	DeletePolicy(datapath.PolicyKey) error
	Policy() (map[datapath.PolicyKey]datapath.PolicyEntry, error)
	UpsertIPCache(netip.Prefix, uint32) error
	DeleteIPCache(netip.Prefix) error
	IPCache() (map[netip.Prefix]uint32, error)
	// LookupIPCache is the datapath's identity lookup of one address
	// (false: no entry, the peer is world).
	LookupIPCache(netip.Addr) (uint32, bool)
	DeleteConntrack(drop func(datapath.CTEntry) bool) (int, error)
}

// EndpointState is a local endpoint as the endpoint table holds it.
type EndpointState struct {
	ID, Ifindex     uint32
	Namespace, Name string
	Identity        uint32
	Flags           Flags
}

// EndpointPolicy is what the engine sets on a local endpoint.
type EndpointPolicy struct {
	Identity uint32
	Flags    Flags
}

// Endpoints is the node's endpoint table (the agent). It owns the endpoint
// map and the ipcache entries of its own pods and gateways.
type Endpoints interface {
	PolicyEndpoints() []EndpointState
	// SetEndpointPolicy writes identity and flags of the endpoints given
	// by id to the endpoint map, and the ipcache entries of their addresses.
	SetEndpointPolicy(map[uint32]EndpointPolicy) error
	// OwnsPrefix reports the ipcache prefixes the table writes itself.
	OwnsPrefix(netip.Prefix) bool
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	Node      string
	Datapath  Datapath
	Endpoints Endpoints
	Log       *slog.Logger
	// FlushAgain lists delays after an apply at which the connections it
	// cut are removed again from conntrack. Packets in flight when an
	// entry is removed (a reply leaving the pod) make the datapath create
	// it anew, oriented the other way, and the cut connection would pass
	// as replies; removing the same 5-tuples a few times closes that race.
	// nil: only the flush of the apply itself.
	FlushAgain []time.Duration
	// PolicyCapacity is how many entries the policy map holds
	// (datapath.PolicyCapacity); 0 is unbounded. A snapshot whose entries
	// do not fit is refused whole (CapacityError): nothing of it is
	// written and the node keeps enforcing the policy it had.
	PolicyCapacity int
}

// CapacityError is an Apply refused because the node's compiled policy
// needs more policy map entries than the map holds.
type CapacityError struct {
	Generation        string
	Entries, Capacity int
	MemoryBytes       int64 // what the entries would cost (datapath.PolicyEntryBytes each)
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("policy refused: generation %s needs %d policy map entries, the map holds %d; the previous policy stays enforced",
		e.Generation, e.Entries, e.Capacity)
}

// Engine keeps a node's datapath equal to the compiled policy of the
// latest snapshot, changing only what differs, in an order that never
// drops traffic that both the old and the new policy allow:
//
//  1. enforcement flags that go off are cleared first;
//  2. new and changed allow entries are written;
//  3. new and changed ipcache entries are written;
//  4. endpoint identities and flags that go on are set, then deny entries
//     (the default-deny slot, which may replace an allow-all) are written;
//  5. stale policy entries and ipcache prefixes are removed;
//  6. conntrack entries the new policy denies are removed, so an
//     established connection cannot outlive a new deny.
type Engine struct {
	cfg  EngineConfig
	log  *slog.Logger
	comp *Compiler

	mu         sync.Mutex // serialises Apply
	haveLoaded bool
	applied    map[uint32]EndpointEntries // the policy map, by endpoint
	ipcache    map[netip.Prefix]uint32    // entries the engine wrote (not owned by the table)

	cur atomic.Pointer[Compiled]

	applies uint64             // counts Apply calls, under mu
	cut     map[ctKey]struct{} // connections the last apply cut

	invalid atomic.Pointer[[]InvalidPolicy] // of the last Apply
	refused atomic.Pointer[CapacityError]   // of the last Apply, nil when it fit
}

// Refused is the last Apply's refusal for lack of room in the policy map,
// or nil (the agent's loupe_policy_refused metric).
func (e *Engine) Refused() *CapacityError { return e.refused.Load() }

// InvalidPolicy is a policy of the snapshot that failed validation and is
// enforced fail-closed.
type InvalidPolicy struct {
	Ref Ref
	Err error
}

// InvalidPolicies lists the invalid policies of the last Apply, sorted
// (the agent's loupe_policy_invalid metric).
func (e *Engine) InvalidPolicies() []InvalidPolicy {
	if p := e.invalid.Load(); p != nil {
		return *p
	}
	return nil
}

// ctKey is a connection seen from its endpoint, whatever its orientation.
type ctKey struct {
	ifindex       uint32
	proto         uint8
	local, remote netip.Addr
	lport, rport  uint16
}

func ctKeyOf(ct datapath.CTEntry) ctKey {
	if ct.Direction == contract.DirectionEgress {
		return ctKey{ct.Ifindex, ct.Proto, ct.Src, ct.Dst, ct.SrcPort, ct.DstPort}
	}
	return ctKey{ct.Ifindex, ct.Proto, ct.Dst, ct.Src, ct.DstPort, ct.SrcPort}
}

// NewEngine returns an engine; nothing is written until Apply.
func NewEngine(cfg EngineConfig) *Engine {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Engine{cfg: cfg, log: log, comp: NewCompiler(cfg.Node)}
}

// Rules resolves rule ids to policies (the observer's PolicyResolver).
func (e *Engine) Rules() *RuleTable { return e.comp.Rules }

// Current is the last applied compilation, or nil.
func (e *Engine) Current() *Compiled { return e.cur.Load() }

// PodIdentity is the identity of a pod in the last applied snapshot
// (contract.IdentityInit when it is not there yet), for endpoint registration.
func (e *Engine) PodIdentity(namespace, name string) uint32 {
	if c := e.cur.Load(); c != nil {
		return c.Identities.PodIdentity(namespace, name)
	}
	return contract.IdentityInit
}

// ApplyStats counts what one Apply changed.
type ApplyStats struct {
	Upserted, Deleted       int // policy entries
	IPCacheSet, IPCacheDel  int
	EndpointsSet            int
	ConntrackDeleted        int
	Compile, Total          time.Duration
	Entries, IPCacheEntries int
	Groups, Recomputed      int // endpoint groups, and how many were compiled anew
}

// Apply compiles snap for the node's endpoints and writes the difference.
func (e *Engine) Apply(snap *metadata.Snapshot) (st ApplyStats, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	start := time.Now()
	dp := e.cfg.Datapath
	defer func() {
		var ce *CapacityError
		if err != nil && !errors.As(err, &ce) {
			// Whatever was half written, read the maps again next time.
			e.haveLoaded = false
		}
	}()
	if !e.haveLoaded {
		// The maps are pinned: start from what a previous agent left.
		have, err := dp.Policy()
		if err != nil {
			return st, fmt.Errorf("policy: read policy map: %w", err)
		}
		ipc, err := dp.IPCache()
		if err != nil {
			return st, fmt.Errorf("policy: read ipcache: %w", err)
		}
		e.applied = map[uint32]EndpointEntries{}
		for k, v := range have {
			m := e.applied[k.EndpointID]
			if m == nil {
				m = EndpointEntries{}
				e.applied[k.EndpointID] = m
			}
			m[EntryKey{Peer: k.PeerIdentity, Port: k.Port, PortWildBits: k.PortWildBits, Proto: k.Proto, Direction: k.Direction}] = v
		}
		e.ipcache = map[netip.Prefix]uint32{}
		for p, id := range ipc {
			if !e.cfg.Endpoints.OwnsPrefix(p) {
				e.ipcache[p] = id
			}
		}
		e.haveLoaded = true
	}

	eps := e.cfg.Endpoints.PolicyEndpoints()
	locals := make([]LocalEndpoint, 0, len(eps))
	for _, ep := range eps {
		locals = append(locals, LocalEndpoint{ID: ep.ID, Namespace: ep.Namespace, Name: ep.Name})
	}
	m := e.comp.NewModel(snap)
	e.noteInvalid(m)
	c := e.comp.Compile(m, locals)
	st.Compile = time.Since(start)
	need := c.NumEntries()
	if capacity := e.cfg.PolicyCapacity; capacity > 0 && need > capacity {
		// Refused before any write: part of a policy set would enforce
		// neither the old nor the new one.
		ce := &CapacityError{Generation: snap.Generation, Entries: need, Capacity: capacity, MemoryBytes: int64(need) * datapath.PolicyEntryBytes}
		e.refused.Store(ce)
		return st, e.failClosed(c, ce)
	}
	e.refused.Store(nil)
	// Allow entries are written before the stale ones go, so for a moment
	// the map holds both. When both do not fit, stale entries go first:
	// traffic only they allowed may drop until the new entries are in.
	removeFirst := false
	if capacity := e.cfg.PolicyCapacity; capacity > 0 {
		union := 0
		for _, have := range e.applied {
			union += len(have)
		}
		for id, ce := range c.Endpoints {
			have := e.applied[id]
			if sameEntries(have, ce.Entries) {
				continue
			}
			for k := range ce.Entries {
				if _, ok := have[k]; !ok {
					union++
				}
			}
		}
		if removeFirst = union > capacity; removeFirst {
			e.log.Warn("policy map too small for the old and new entries together: removing stale entries first",
				"entries", need, "during_change", union, "capacity", capacity)
		}
	}
	wantIPC := make(map[netip.Prefix]uint32, len(c.IPCache))
	for p, id := range c.IPCache {
		if !e.cfg.Endpoints.OwnsPrefix(p) {
			wantIPC[p] = id
		}
	}
	compiled := func(id uint32) CompiledEndpoint {
		if ce := c.Endpoints[id]; ce != nil {
			return *ce
		}
		return CompiledEndpoint{Identity: contract.IdentityInit}
	}

	// 1. Flags that go off, first.
	off := map[uint32]EndpointPolicy{}
	for _, ep := range eps {
		nf := compiled(ep.ID).Flags
		f := Flags{Ingress: ep.Flags.Ingress && nf.Ingress, Egress: ep.Flags.Egress && nf.Egress}
		if f != ep.Flags {
			off[ep.ID] = EndpointPolicy{Identity: ep.Identity, Flags: f}
		}
	}
	if len(off) > 0 {
		if err := e.cfg.Endpoints.SetEndpointPolicy(off); err != nil {
			return st, fmt.Errorf("policy: clear enforcement: %w", err)
		}
	}
	// 2. New and changed allow entries. Deny entries (the default-deny
	// slot) wait until step 4b: overwriting an allow-all before the new
	// narrower allows exist would drop traffic both policies allow.
	// Endpoints whose entries are the very map applied last time (an
	// endpoint group no changed policy touched) are skipped.
	var keys []datapath.PolicyKey
	var vals []datapath.PolicyEntry
	upsert := func(deny bool) error {
		keys, vals = keys[:0], vals[:0]
		for id, ce := range c.Endpoints {
			have := e.applied[id]
			if sameEntries(have, ce.Entries) {
				continue
			}
			for k, v := range ce.Entries {
				if v.Deny != deny {
					continue
				}
				if old, ok := have[k]; ok && old == v {
					continue
				}
				keys, vals = append(keys, k.policyKey(id)), append(vals, v)
			}
		}
		if len(keys) == 0 {
			return nil
		}
		if err := dp.UpsertPolicies(keys, vals); err != nil {
			return fmt.Errorf("policy: %w", err)
		}
		st.Upserted += len(keys)
		return nil
	}
	removeStale := func() error {
		for id, have := range e.applied {
			var want EndpointEntries
			if ce := c.Endpoints[id]; ce != nil {
				want = ce.Entries
			}
			if sameEntries(have, want) {
				continue
			}
			for k := range have {
				if _, ok := want[k]; ok {
					continue
				}
				if err := dp.DeletePolicy(k.policyKey(id)); err != nil {
					return fmt.Errorf("policy: %w", err)
				}
				st.Deleted++
			}
		}
		return nil
	}
	if removeFirst {
		if err := removeStale(); err != nil {
			return st, err
		}
	}
	if err := upsert(false); err != nil {
		return st, err
	}
	// 3. New and changed ipcache entries.
	for p, id := range wantIPC {
		if old, ok := e.ipcache[p]; ok && old == id {
			continue
		}
		if err := dp.UpsertIPCache(p, id); err != nil {
			return st, fmt.Errorf("policy: %w", err)
		}
		e.ipcache[p] = id
		st.IPCacheSet++
	}
	// 4. Identities, and flags that go on.
	on := map[uint32]EndpointPolicy{}
	for _, ep := range eps {
		ce := compiled(ep.ID)
		want := EndpointPolicy{Identity: ce.Identity, Flags: ce.Flags}
		cur := EndpointPolicy{Identity: ep.Identity, Flags: ep.Flags}
		if o, ok := off[ep.ID]; ok {
			cur = o
		}
		if want != cur {
			on[ep.ID] = want
		}
	}
	if len(on) > 0 {
		if err := e.cfg.Endpoints.SetEndpointPolicy(on); err != nil {
			return st, fmt.Errorf("policy: set endpoints: %w", err)
		}
	}
	st.EndpointsSet = len(off) + len(on)
	// 4b. Deny entries.
	if err := upsert(true); err != nil {
		return st, err
	}
	// 5. Stale entries.
	if !removeFirst {
		if err := removeStale(); err != nil {
			return st, err
		}
	}
	e.applied = make(map[uint32]EndpointEntries, len(c.Endpoints))
	for id, ce := range c.Endpoints {
		if ce.Entries != nil {
			e.applied[id] = ce.Entries
		}
	}
	for p := range e.ipcache {
		if _, ok := wantIPC[p]; ok {
			continue
		}
		if err := dp.DeleteIPCache(p); err != nil {
			return st, fmt.Errorf("policy: %w", err)
		}
		delete(e.ipcache, p)
		st.IPCacheDel++
	}
	// 6. Connections the new policy denies.
	if st.Upserted+st.Deleted+st.IPCacheSet+st.IPCacheDel+st.EndpointsSet > 0 {
		n, err := e.flushConntrack(c, eps)
		if err != nil {
			return st, err
		}
		st.ConntrackDeleted = n
	}
	e.applies++
	if len(e.cut) > 0 && len(e.cfg.FlushAgain) > 0 {
		go e.flushAgain(e.applies)
	}
	e.cur.Store(c)
	st.Entries, st.IPCacheEntries = c.NumEntries(), len(wantIPC)
	st.Groups, st.Recomputed = c.Groups, c.Recomputed
	st.Total = time.Since(start)
	return st, nil
}

// failClosed switches enforcement on, without entries (so denying
// everything), for the directions the refused compile c isolates on
// endpoints that have no entries in the map (pods that came after the
// last policy that fit): refusing a policy set must not leave them open.
func (e *Engine) failClosed(c *Compiled, refused *CapacityError) error {
	closed := map[uint32]EndpointPolicy{}
	for _, ep := range e.cfg.Endpoints.PolicyEndpoints() {
		ce := c.Endpoints[ep.ID]
		if ce == nil || e.applied[ep.ID] != nil {
			continue
		}
		f := Flags{Ingress: ep.Flags.Ingress || ce.Flags.Ingress, Egress: ep.Flags.Egress || ce.Flags.Egress}
		if f != ep.Flags {
			closed[ep.ID] = EndpointPolicy{Identity: ep.Identity, Flags: f}
		}
	}
	if len(closed) == 0 {
		return refused
	}
	if err := e.cfg.Endpoints.SetEndpointPolicy(closed); err != nil {
		return errors.Join(refused, fmt.Errorf("policy: isolate new endpoints: %w", err))
	}
	return refused
}

// sameEntries reports whether a and b are the same map (not merely equal).
func sameEntries(a, b EndpointEntries) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// flushConntrack removes the conntrack entries whose first packet the new
// entries would drop.
func (e *Engine) flushConntrack(c *Compiled, eps []EndpointState) (int, error) {
	// Peers are looked up one by one, as the datapath does, and only for
	// connections of enforced endpoints: dumping the ipcache (an LPM trie,
	// a system call an entry) cost more than the rest of an incremental
	// apply.
	peers := map[netip.Addr]uint32{}
	identity := func(a netip.Addr) uint32 {
		id, ok := peers[a]
		if !ok {
			if id, ok = e.cfg.Datapath.LookupIPCache(a); !ok {
				id = contract.IdentityWorld
			}
			peers[a] = id
		}
		return id
	}
	byIfindex := make(map[uint32]uint32, len(eps))
	for _, ep := range eps {
		byIfindex[ep.Ifindex] = ep.ID
	}
	e.cut = map[ctKey]struct{}{}
	n, err := e.cfg.Datapath.DeleteConntrack(func(ct datapath.CTEntry) (drop bool) {
		defer func() {
			if drop {
				e.cut[ctKeyOf(ct)] = struct{}{}
			}
		}()
		id, ok := byIfindex[ct.Ifindex]
		if !ok || c.Endpoints[id] == nil {
			return false
		}
		f := c.Endpoints[id].Flags
		peer := ct.Src
		if ct.Direction == contract.DirectionEgress {
			if !f.Egress {
				return false
			}
			peer = ct.Dst
		} else if !f.Ingress {
			return false
		}
		return !c.Lookup(id, identity(peer), ct.DstPort, ct.Proto, ct.Direction).Allowed
	})
	if err != nil {
		return n, fmt.Errorf("policy: %w", err)
	}
	return n, nil
}

// flushCut removes the conntrack entries of the connections the last
// apply cut, in either orientation.
func (e *Engine) flushCut() (int, error) {
	if len(e.cut) == 0 {
		return 0, nil
	}
	n, err := e.cfg.Datapath.DeleteConntrack(func(ct datapath.CTEntry) bool {
		_, ok := e.cut[ctKeyOf(ct)]
		return ok
	})
	if err != nil {
		return n, fmt.Errorf("policy: %w", err)
	}
	return n, nil
}

// flushAgain runs flushCut at the configured delays, unless another apply
// came in between.
func (e *Engine) flushAgain(apply uint64) {
	start := time.Now()
	for _, d := range e.cfg.FlushAgain {
		time.Sleep(time.Until(start.Add(d)))
		e.mu.Lock()
		if e.applies != apply {
			e.mu.Unlock()
			return
		}
		n, err := e.flushCut()
		e.mu.Unlock()
		if err != nil {
			e.log.Warn("flush cut connections again", "err", err)
		} else if n > 0 {
			e.log.Info("removed re-created entries of cut connections", "conntrack_deleted", n, "after", d)
		}
	}
}

// Run applies the source's snapshot now, on every change and whenever the
// endpoint table changes (kick), and calls applied with the generation of
// each snapshot it has fully written. A failed apply is retried.
func (e *Engine) Run(ctx context.Context, src metadata.Source, kick <-chan struct{}, applied func(generation string)) error {
	sig := src.Subscribe(ctx)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	apply := func() {
		snap := src.Current()
		st, err := e.Apply(snap)
		var ce *CapacityError
		if errors.As(err, &ce) {
			// Retrying cannot help: the next snapshot or endpoint change will.
			e.log.Error("network policy refused: it does not fit in the policy map", "generation", snap.Generation,
				"entries", ce.Entries, "capacity", ce.Capacity, "memory_bytes", ce.MemoryBytes)
			return
		}
		if err != nil {
			e.log.Error("apply network policy", "generation", snap.Generation, "err", err)
			retry.Reset(time.Second)
			return
		}
		if st.Upserted+st.Deleted+st.IPCacheSet+st.IPCacheDel+st.EndpointsSet+st.ConntrackDeleted > 0 {
			e.log.Info("network policy applied", "generation", snap.Generation, "entries", st.Entries,
				"upserted", st.Upserted, "deleted", st.Deleted, "ipcache_set", st.IPCacheSet, "ipcache_deleted", st.IPCacheDel,
				"endpoints_set", st.EndpointsSet, "conntrack_deleted", st.ConntrackDeleted,
				"compile", st.Compile, "total", st.Total)
		}
		if applied != nil {
			applied(snap.Generation)
		}
	}
	apply()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-sig:
			if !ok {
				return nil
			}
			apply()
		case <-kick:
			apply()
		case <-retry.C:
			apply()
		}
	}
}

// noteInvalid records the invalid policies of m and logs each one that is
// new or changed since the last Apply (every Apply would repeat them).
func (e *Engine) noteInvalid(m *Model) {
	prev := map[Ref]string{}
	for _, ip := range e.InvalidPolicies() {
		prev[ip.Ref] = ip.Err.Error()
	}
	var now []InvalidPolicy
	for _, p := range m.Policies { // sorted by Ref
		if p.Invalid == nil {
			continue
		}
		now = append(now, InvalidPolicy{Ref: p.Ref, Err: p.Invalid})
		if msg, ok := prev[p.Ref]; !ok || msg != p.Invalid.Error() {
			e.log.Error("invalid network policy enforced fail-closed: the pods it selects are isolated and it allows nothing",
				"namespace", p.Ref.Namespace, "name", p.Ref.Name, "err", p.Invalid)
		}
		delete(prev, p.Ref)
	}
	for r := range prev {
		e.log.Info("network policy no longer invalid or gone", "namespace", r.Namespace, "name", r.Name)
	}
	e.invalid.Store(&now)
}
