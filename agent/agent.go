// Package agent is the node agent's core: pod IP allocation, the endpoint
// table (persisted under the state dir and mirrored into the datapath's
// endpoint map) and the endpoint API that loupe-cni calls over a unix
// socket. It depends on the datapath only through the Datapath interface;
// package agent/daemon wires the real one.
package agent

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loupe-project/loupe/agent/ipam"
	"github.com/loupe-project/loupe/contract"
)

// State dir layout.
const (
	IPAMStateFile      = "ipam.json"
	EndpointsStateFile = "endpoints.json"
)

// maxEndpointID bounds endpoint ids to 16 bits, as Hubble tools expect
// small numbers; a node never has that many pods.
const maxEndpointID = 1<<16 - 1

// Config configures an Agent.
type Config struct {
	NodeName string
	// PodCIDRs: one IPv4 CIDR, optionally one IPv6 CIDR.
	PodCIDRs []netip.Prefix
	StateDir string
	BPFRoot  string
	// XDPMode is the default the CNI plugin uses when its netconf has none.
	XDPMode  string
	Datapath Datapath
	// HostLinkAlive reports whether an endpoint's host veth (index and
	// name) still exists. When set, endpoints whose veth is gone are
	// released (sweep.go); nil trusts the table.
	HostLinkAlive func(ifindex uint32, name string) bool
	// DetachHostLink removes the link pins of a host veth: on Unregister,
	// Release and for a gone veth. Absent pins are not an error.
	DetachHostLink func(name string) error
	// AttachHostLink attaches the datapath programs to a host veth in an
	// XDP mode ("native", "generic" or "off") and pins the links, for
	// Register; CheckHostLink tells whether they are. Nil: Register cannot
	// attach and CheckAttached fails.
	AttachHostLink func(name, xdpMode string) error
	CheckHostLink  func(name, xdpMode string) error
	// HostLinkName returns the name of the link with this index, false
	// when there is none. Rebuilding endpoints from the datapath after a
	// corrupt endpoints.json needs it (recover.go); nil rebuilds none.
	HostLinkName func(ifindex uint32) (string, bool)
	// HostLinkMAC returns the MAC of the link with this index, "" when
	// there is none. With the pod's MAC it lets the datapath deliver other
	// local pods' packets straight into the pod; nil (or "") routes them.
	HostLinkMAC func(ifindex uint32) string
	// Version is reported by Status.
	Version string
	Log     *slog.Logger
}

// Agent holds the node's allocations and endpoints and serves the
// endpoint API. Methods are safe for concurrent use.
type Agent struct {
	cfg  Config
	log  *slog.Logger
	ipam *ipam.Allocator
	dp   Datapath

	// mu serialises changes to the endpoint table, its file and the
	// datapath map, so the three never disagree after a call returns.
	mu        sync.Mutex
	endpoints map[ipam.Key]*Endpoint
	nextID    uint32
	// orphans are the allocations the last sweep found without an
	// endpoint (sweep.go).
	orphans map[ipam.Key]bool
	// recoveries are the state files found corrupt at start (recover.go).
	recoveries []StateRecovery

	ready      atomic.Bool
	generation atomic.Pointer[string]

	// Policy hooks (policy.go): the identity function used on Register and
	// the signal sent after every endpoint table change.
	identityFn atomic.Pointer[func(namespace, name string) uint32]
	changed    chan struct{}
}

// New creates the state dir if needed, restores allocations and endpoints
// from it, and reconciles the datapath's endpoint map with them: restored
// endpoints are (re)written, entries the agent does not know are removed.
// The agent is ready when New returns.
func New(cfg Config) (*Agent, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("agent: node name required")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("agent: state dir required")
	}
	if cfg.Datapath == nil {
		return nil, errors.New("agent: datapath required")
	}
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: create state dir: %w", err)
	}
	ipamCfg := ipam.Config{CIDRs: cfg.PodCIDRs, StatePath: filepath.Join(cfg.StateDir, IPAMStateFile), Log: log}
	alloc, err := ipam.New(ipamCfg)
	var ipamRec *StateRecovery
	if errors.Is(err, ipam.ErrCorruptState) {
		// Rebuilt by restore from the endpoints (recover.go).
		to, merr := moveAside(ipamCfg.StatePath, time.Now())
		if merr != nil {
			return nil, fmt.Errorf("agent: %w; %w", err, merr)
		}
		ipamRec = &StateRecovery{File: IPAMStateFile, MovedTo: to, Err: err}
		alloc, err = ipam.New(ipamCfg)
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: cfg, log: log, ipam: alloc, dp: cfg.Datapath, endpoints: map[ipam.Key]*Endpoint{}, nextID: 1, changed: make(chan struct{}, 1)}
	if err := a.restore(ipamRec); err != nil {
		return nil, err
	}
	// Pods deleted while the agent was away: their veths are gone.
	if _, err := a.SweepDead(); err != nil {
		log.Warn("sweep of dead endpoints at start; the periodic sweep retries", "err", err)
	}
	if err := a.reconcile(); err != nil {
		return nil, err
	}
	a.ready.Store(true)
	return a, nil
}

func (a *Agent) endpointsPath() string { return filepath.Join(a.cfg.StateDir, EndpointsStateFile) }

// restore loads endpoints.json, keeping only endpoints whose addresses are
// still allocated to them. ipamRec is set when ipam.json was corrupt and
// the allocator starts empty. A corrupt endpoints.json, or a lost
// ipam.json without an endpoints.json, is rebuilt from the datapath.
func (a *Agent) restore(ipamRec *StateRecovery) error {
	b, err := os.ReadFile(a.endpointsPath())
	if errors.Is(err, os.ErrNotExist) {
		if ipamRec == nil {
			return nil
		}
		return a.restoreFromDatapath(ipamRec, nil)
	}
	if err != nil {
		return fmt.Errorf("agent: read endpoints: %w", err)
	}
	st, err := parseEndpointsState(b)
	if err != nil {
		to, merr := moveAside(a.endpointsPath(), time.Now())
		if merr != nil {
			return fmt.Errorf("agent: state file %s: %w; %w", a.endpointsPath(), err, merr)
		}
		return a.restoreFromDatapath(ipamRec, &StateRecovery{File: EndpointsStateFile, MovedTo: to,
			Err: fmt.Errorf("state file %s: %w: %w", a.endpointsPath(), errCorruptEndpoints, err)})
	}
	if ipamRec != nil {
		ipamRec.Recovered = a.reserveEndpoints(st.Endpoints)
		a.recordRecovery(*ipamRec)
	}
	if st.NextID >= 1 && st.NextID <= maxEndpointID {
		a.nextID = st.NextID
	}
	dropped := false
	for i := range st.Endpoints {
		e := st.Endpoints[i]
		if al, ok := a.ipam.Get(e.key()); !ok || al.IPv4 != e.IPv4 || al.IPv6 != e.IPv6 {
			a.log.Warn("dropping restored endpoint: its addresses are not allocated to it",
				"container_id", e.ContainerID, "ifname", e.Ifname, "ipv4", e.IPv4, "ipv6", e.IPv6)
			dropped = true
			continue
		}
		a.endpoints[e.key()] = &e
	}
	if dropped {
		return a.persistLocked(a.endpoints)
	}
	return nil
}

// restoreFromDatapath makes the rebuilt endpoint table the agent's and
// writes it, recording the recovered files.
func (a *Agent) restoreFromDatapath(ipamRec, epRec *StateRecovery) error {
	table, next, err := a.rebuildEndpoints()
	if err != nil {
		return fmt.Errorf("agent: rebuild endpoints: %w", err)
	}
	a.endpoints, a.nextID = table, next
	for _, r := range []*StateRecovery{ipamRec, epRec} {
		if r != nil {
			r.Recovered = len(table)
			a.recordRecovery(*r)
		}
	}
	return a.persistLocked(a.endpoints)
}

// reconcile makes the datapath's endpoint map equal to the table. The map
// is pinned, so after a restart it normally already is.
func (a *Agent) reconcile() error {
	have, err := a.dp.Endpoints()
	if err != nil {
		return fmt.Errorf("agent: read datapath endpoints: %w", err)
	}
	want := map[uint32]EndpointInfo{}
	for _, e := range a.endpoints {
		if e.HostMAC == "" { // state written before the agent kept it
			e.HostMAC = a.hostLinkMAC(e.HostIfindex)
		}
		want[e.HostIfindex] = e.info()
	}
	var written, removed int
	for idx, info := range want {
		if cur, ok := have[idx]; ok && cur == info {
			continue
		}
		if err := a.dp.UpsertEndpoint(idx, info); err != nil {
			return fmt.Errorf("agent: restore endpoint on ifindex %d: %w", idx, err)
		}
		written++
	}
	for idx := range have {
		if _, ok := want[idx]; ok {
			continue
		}
		if err := a.dp.DeleteEndpoint(idx); err != nil {
			return fmt.Errorf("agent: remove unknown endpoint on ifindex %d: %w", idx, err)
		}
		removed++
	}
	a.log.Info("endpoints restored", "endpoints", len(want), "written", written, "removed_unknown", removed)
	return a.syncIPCache(a.endpoints)
}

// ownsPrefix reports whether an ipcache prefix lies inside the node's pod
// CIDRs: those entries are the agent's (its pods and its gateways); the
// rest of the ipcache (remote pods, the world) belongs to others.
func (a *Agent) ownsPrefix(p netip.Prefix) bool {
	for _, c := range a.ipam.CIDRs() {
		if p.Bits() >= c.Bits() && c.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// ipcacheOf is the ipcache entries the agent owns for table: its
// endpoints (address -> pod identity) plus the gateways (-> host).
func (a *Agent) ipcacheOf(table map[ipam.Key]*Endpoint) map[netip.Prefix]uint32 {
	want := map[netip.Prefix]uint32{}
	gw4, gw6 := a.Gateways()
	for _, gw := range []netip.Addr{gw4, gw6} {
		if gw.IsValid() {
			want[netip.PrefixFrom(gw, gw.BitLen())] = contract.IdentityHost
		}
	}
	for _, e := range table {
		for _, ip := range []netip.Addr{e.IPv4, e.IPv6} {
			if ip.IsValid() {
				want[netip.PrefixFrom(ip, ip.BitLen())] = e.Identity
			}
		}
	}
	return want
}

// updateIPCache moves the ipcache from table prev (which it reflects) to
// next, writing only the entries that differ. Register and Unregister use
// it: reading the whole map back on every pod change cost ADD and DEL
// milliseconds (issue #25). Start-up and rollbacks still use syncIPCache,
// which repairs any drift.
func (a *Agent) updateIPCache(prev, next map[ipam.Key]*Endpoint) error {
	had, want := a.ipcacheOf(prev), a.ipcacheOf(next)
	for p, id := range want {
		if cur, ok := had[p]; ok && cur == id {
			continue
		}
		if err := a.dp.UpsertIPCache(p, id); err != nil {
			return fmt.Errorf("write ipcache: %w", err)
		}
	}
	for p := range had {
		if _, ok := want[p]; !ok && a.ownsPrefix(p) {
			if err := a.dp.DeleteIPCache(p); err != nil {
				return fmt.Errorf("remove ipcache: %w", err)
			}
		}
	}
	return nil
}

// syncIPCache makes the ipcache entries inside the pod CIDRs equal to
// table's endpoints (address -> pod identity) plus the gateways (-> host).
func (a *Agent) syncIPCache(table map[ipam.Key]*Endpoint) error {
	want := a.ipcacheOf(table)
	have, err := a.dp.IPCache()
	if err != nil {
		return fmt.Errorf("read ipcache: %w", err)
	}
	for p, id := range want {
		if cur, ok := have[p]; ok && cur == id {
			continue
		}
		if err := a.dp.UpsertIPCache(p, id); err != nil {
			return fmt.Errorf("write ipcache: %w", err)
		}
	}
	for p := range have {
		if _, ok := want[p]; !ok && a.ownsPrefix(p) {
			if err := a.dp.DeleteIPCache(p); err != nil {
				return fmt.Errorf("remove ipcache: %w", err)
			}
		}
	}
	return nil
}

// persistLocked writes table to endpoints.json; the caller holds mu (or
// owns the agent exclusively).
func (a *Agent) persistLocked(table map[ipam.Key]*Endpoint) error {
	st := &endpointsState{Version: endpointsStateVersion, NextID: a.nextID}
	for _, e := range table {
		st.Endpoints = append(st.Endpoints, *e)
	}
	return writeEndpointsState(a.endpointsPath(), st)
}

// Ready reports whether the datapath is loaded and the endpoints restored.
func (a *Agent) Ready() bool { return a != nil && a.ready.Load() }

// SetAppliedGeneration records the metadata generation whose objects the
// agent has fully written to its datapath; Status reports it.
func (a *Agent) SetAppliedGeneration(g string) { a.generation.Store(&g) }

// AppliedGeneration is the last value given to SetAppliedGeneration.
func (a *Agent) AppliedGeneration() string {
	if g := a.generation.Load(); g != nil {
		return *g
	}
	return ""
}

// Endpoints returns a copy of the endpoint table, sorted by id.
func (a *Agent) Endpoints() []Endpoint {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Endpoint, 0, len(a.endpoints))
	for _, e := range a.endpoints {
		out = append(out, *e)
	}
	slices.SortFunc(out, func(x, y Endpoint) int { return int(x.ID) - int(y.ID) })
	return out
}

// PodCIDRs returns the node's pod CIDRs, comma-separated, IPv4 first.
func (a *Agent) PodCIDRs() string {
	var s []string
	for _, c := range a.ipam.CIDRs() {
		s = append(s, c.String())
	}
	return strings.Join(s, ",")
}

// Gateways returns the gateway address of each configured family.
func (a *Agent) Gateways() (v4, v6 netip.Addr) { return a.ipam.Gateways() }

// allocateIDLocked returns the next free endpoint id, next-fit so that a
// freed id is not reused at once; the caller holds mu.
func (a *Agent) allocateIDLocked() (uint32, error) {
	used := make(map[uint32]bool, len(a.endpoints))
	for _, e := range a.endpoints {
		used[e.ID] = true
	}
	id := a.nextID
	for range maxEndpointID {
		if id < 1 || id > maxEndpointID {
			id = 1
		}
		if !used[id] {
			a.nextID = id + 1
			return id, nil
		}
		id++
	}
	return 0, errors.New("no free endpoint id")
}
