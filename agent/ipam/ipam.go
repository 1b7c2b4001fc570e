// Package ipam hands out pod addresses from the node's pod CIDRs.
//
// Each attachment, keyed by (container id, ifname), gets at most one IPv4
// address and, when an IPv6 CIDR is configured, one IPv6 address.
// Allocation is idempotent: asking twice for the same key returns the same
// addresses. In every CIDR the network address, the gateway (the first
// address after the network address) and the last address (the IPv4
// broadcast; kept symmetric for IPv6) are never handed out. Addresses are
// chosen next-fit after the last one handed out, so a released address is
// not reused at once. Every change is written to the state file atomically
// before it is acknowledged.
package ipam

import (
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/netip"
	"os"
	"slices"
	"sync"

	"github.com/loupe-project/loupe/agent/internal/atomicfile"
)

// ErrExhausted is returned when a pod CIDR has no free address left.
var ErrExhausted = errors.New("pod cidr exhausted")

// ErrCorruptState is wrapped by New when the state file was read but does
// not parse or validate, as opposed to not being readable at all: the
// caller may move such a file aside and rebuild the allocations (Reserve).
var ErrCorruptState = errors.New("corrupt state file")

// ErrConflict is returned by Reserve for an address held by another key.
var ErrConflict = errors.New("address held by another attachment")

// Key identifies one attachment of a container.
type Key struct {
	ContainerID string
	Ifname      string
}

// Allocation is the addresses of one attachment.
type Allocation struct {
	Key
	IPv4         netip.Addr
	IPv6         netip.Addr
	PodNamespace string
	PodName      string
}

// Config configures an Allocator.
type Config struct {
	// CIDRs holds at most one IPv4 and one IPv6 prefix, at least one of them.
	CIDRs []netip.Prefix
	// StatePath is the state file; empty keeps the state in memory only.
	StatePath string
	Log       *slog.Logger
}

// Allocator owns the node's pod CIDRs. It is safe for concurrent use.
type Allocator struct {
	mu     sync.Mutex
	v4, v6 *pool
	allocs map[Key]*Allocation
	path   string
	log    *slog.Logger
}

// pool is one CIDR.
type pool struct {
	prefix  netip.Prefix
	gateway netip.Addr
	first   netip.Addr // first address that may be handed out
	last    netip.Addr // last address that may be handed out
	size    *big.Int   // number of addresses between first and last
	used    map[netip.Addr]Key
	cursor  netip.Addr // the last address handed out
}

// New creates an allocator for cfg.CIDRs and restores its state file, if
// any. Restored allocations whose addresses are not in the configured CIDRs
// (the node's CIDR changed) are dropped and logged.
func New(cfg Config) (*Allocator, error) {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Allocator{allocs: map[Key]*Allocation{}, path: cfg.StatePath, log: log}
	if len(cfg.CIDRs) == 0 {
		return nil, errors.New("ipam: no pod cidr")
	}
	for _, c := range cfg.CIDRs {
		p, err := newPool(c)
		if err != nil {
			return nil, fmt.Errorf("ipam: %w", err)
		}
		slot := &a.v6
		if c.Addr().Is4() {
			slot = &a.v4
		}
		if *slot != nil {
			return nil, fmt.Errorf("ipam: more than one pod cidr of the family of %s", c)
		}
		*slot = p
	}
	if a.path == "" {
		return a, nil
	}
	b, err := os.ReadFile(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ipam: read state: %w", err)
	}
	st, err := ParseState(b)
	if err != nil {
		return nil, fmt.Errorf("ipam: state file %s: %w: %w", a.path, ErrCorruptState, err)
	}
	a.restore(st)
	return a, nil
}

func newPool(c netip.Prefix) (*pool, error) {
	if !c.IsValid() || c.Addr().Is4In6() || c.Addr().Zone() != "" {
		return nil, fmt.Errorf("invalid pod cidr %s", c)
	}
	if c != c.Masked() {
		return nil, fmt.Errorf("pod cidr %s has host bits set", c)
	}
	// Network, gateway and last address are reserved: at least one address
	// must remain, so a /30 (IPv4) or /126 (IPv6) is the smallest CIDR.
	if c.Addr().BitLen()-c.Bits() < 2 {
		return nil, fmt.Errorf("pod cidr %s too small: need at least /%d", c, c.Addr().BitLen()-2)
	}
	network := c.Addr()
	gw := network.Next()
	last := lastAddr(c).Prev()
	first := gw.Next()
	size := new(big.Int).Sub(addrInt(last), addrInt(first))
	size.Add(size, big.NewInt(1))
	return &pool{prefix: c, gateway: gw, first: first, last: last, size: size,
		used: map[netip.Addr]Key{}, cursor: gw}, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	host := 128 - (p.Addr().BitLen() - p.Bits())
	for i := host; i < 128; i++ {
		b[i/8] |= 1 << (7 - i%8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		return a.Unmap()
	}
	return a
}

func addrInt(a netip.Addr) *big.Int {
	b := a.As16()
	return new(big.Int).SetBytes(b[:])
}

func (p *pool) contains(a netip.Addr) bool {
	return p != nil && a.IsValid() && p.prefix.Contains(a) &&
		a.Compare(p.first) >= 0 && a.Compare(p.last) <= 0
}

// next finds a free address after the cursor, wrapping around. Among
// len(used)+1 consecutive addresses one is free, so the walk is short even
// for an IPv6 /64.
func (p *pool) next() (netip.Addr, error) {
	steps := new(big.Int).SetInt64(int64(len(p.used)) + 1)
	if steps.Cmp(p.size) > 0 {
		steps = p.size
	}
	n := steps.Int64()
	a := p.cursor
	for i := int64(0); i < n; i++ {
		a = a.Next()
		if !a.IsValid() || a.Compare(p.last) > 0 || a.Compare(p.first) < 0 {
			a = p.first
		}
		if _, taken := p.used[a]; !taken {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: %s", ErrExhausted, p.prefix)
}

// CIDRs returns the configured pod CIDRs, IPv4 first.
func (a *Allocator) CIDRs() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range []*pool{a.v4, a.v6} {
		if p != nil {
			out = append(out, p.prefix)
		}
	}
	return out
}

// Gateways returns the gateway of each family; invalid when the family is
// not configured.
func (a *Allocator) Gateways() (v4, v6 netip.Addr) {
	if a.v4 != nil {
		v4 = a.v4.gateway
	}
	if a.v6 != nil {
		v6 = a.v6.gateway
	}
	return v4, v6
}

// Allocate returns the addresses of key, allocating them on first use.
// The pod namespace and name are recorded for operators; they do not take
// part in the key.
func (a *Allocator) Allocate(key Key, podNamespace, podName string) (Allocation, error) {
	if key.ContainerID == "" || key.Ifname == "" {
		return Allocation{}, errors.New("ipam: empty container id or ifname")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if cur, ok := a.allocs[key]; ok {
		return *cur, nil
	}
	al := &Allocation{Key: key, PodNamespace: podNamespace, PodName: podName}
	var err error
	if a.v4 != nil {
		if al.IPv4, err = a.v4.next(); err != nil {
			return Allocation{}, fmt.Errorf("ipam: %w", err)
		}
	}
	if a.v6 != nil {
		if al.IPv6, err = a.v6.next(); err != nil {
			return Allocation{}, fmt.Errorf("ipam: %w", err)
		}
	}
	oldCursors := [2]netip.Addr{}
	if a.v4 != nil {
		oldCursors[0] = a.v4.cursor
	}
	if a.v6 != nil {
		oldCursors[1] = a.v6.cursor
	}
	a.add(al)
	if err := a.persist(); err != nil {
		a.remove(key)
		if a.v4 != nil {
			a.v4.cursor = oldCursors[0]
		}
		if a.v6 != nil {
			a.v6.cursor = oldCursors[1]
		}
		return Allocation{}, err
	}
	return *al, nil
}

// Reserve records al as given, for rebuilding the allocations of live pods
// after the state file was lost: the addresses must lie in the pod CIDRs
// (one per configured family) and be free or already al's. It is
// idempotent, and written to the state file like an allocation.
func (a *Allocator) Reserve(al Allocation) error {
	if al.ContainerID == "" || al.Ifname == "" {
		return errors.New("ipam: empty container id or ifname")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range []struct {
		p    *pool
		addr netip.Addr
	}{{a.v4, al.IPv4}, {a.v6, al.IPv6}} {
		if !f.addr.IsValid() {
			continue
		}
		if !f.p.contains(f.addr) {
			return fmt.Errorf("ipam: reserve %s: not in the pod cidrs", f.addr)
		}
		if k, ok := f.p.used[f.addr]; ok && k != al.Key {
			return fmt.Errorf("ipam: reserve %s for %s/%s: %w (%s/%s)", f.addr, al.ContainerID, al.Ifname, ErrConflict, k.ContainerID, k.Ifname)
		}
	}
	if cur, ok := a.allocs[al.Key]; ok {
		if cur.IPv4 == al.IPv4 && cur.IPv6 == al.IPv6 {
			return nil
		}
		return fmt.Errorf("ipam: reserve %s/%s: %w: it holds %s %s", al.ContainerID, al.Ifname, ErrConflict, cur.IPv4, cur.IPv6)
	}
	// add moves the cursors to the reserved addresses; keep them where
	// they were, so next-fit goes on from the last address handed out.
	cursors := [2]netip.Addr{}
	for i, p := range []*pool{a.v4, a.v6} {
		if p != nil {
			cursors[i] = p.cursor
		}
	}
	cp := al
	a.add(&cp)
	for i, p := range []*pool{a.v4, a.v6} {
		if p != nil {
			p.cursor = cursors[i]
		}
	}
	if err := a.persist(); err != nil {
		a.remove(al.Key)
		return err
	}
	return nil
}

// add records al and moves the cursors; the caller holds mu.
func (a *Allocator) add(al *Allocation) {
	a.allocs[al.Key] = al
	if al.IPv4.IsValid() {
		a.v4.used[al.IPv4] = al.Key
		a.v4.cursor = al.IPv4
	}
	if al.IPv6.IsValid() {
		a.v6.used[al.IPv6] = al.Key
		a.v6.cursor = al.IPv6
	}
}

// remove forgets key; the caller holds mu.
func (a *Allocator) remove(key Key) *Allocation {
	al, ok := a.allocs[key]
	if !ok {
		return nil
	}
	delete(a.allocs, key)
	if al.IPv4.IsValid() {
		delete(a.v4.used, al.IPv4)
	}
	if al.IPv6.IsValid() {
		delete(a.v6.used, al.IPv6)
	}
	return al
}

// Release frees the addresses of key. An unknown key is not an error.
func (a *Allocator) Release(key Key) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	al := a.remove(key)
	if al == nil {
		return nil
	}
	if err := a.persist(); err != nil {
		// Keep memory and disk in agreement: the release did not happen.
		a.allocs[key] = al
		if al.IPv4.IsValid() {
			a.v4.used[al.IPv4] = key
		}
		if al.IPv6.IsValid() {
			a.v6.used[al.IPv6] = key
		}
		return err
	}
	return nil
}

// Get returns the allocation of key.
func (a *Allocator) Get(key Key) (Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.allocs[key]
	if !ok {
		return Allocation{}, false
	}
	return *al, true
}

// List returns every allocation, sorted by key.
func (a *Allocator) List() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Allocation, 0, len(a.allocs))
	for _, al := range a.allocs {
		out = append(out, *al)
	}
	slices.SortFunc(out, func(x, y Allocation) int { return compareKeys(x.Key, y.Key) })
	return out
}

func compareKeys(x, y Key) int {
	if x.ContainerID != y.ContainerID {
		if x.ContainerID < y.ContainerID {
			return -1
		}
		return 1
	}
	if x.Ifname < y.Ifname {
		return -1
	}
	if x.Ifname > y.Ifname {
		return 1
	}
	return 0
}

// restore loads a parsed state, dropping what does not fit the CIDRs.
func (a *Allocator) restore(st *State) {
	for _, sa := range st.Allocations {
		al := &Allocation{Key: Key{sa.ContainerID, sa.Ifname}, IPv4: sa.IPv4, IPv6: sa.IPv6,
			PodNamespace: sa.PodNamespace, PodName: sa.PodName}
		okv4 := !al.IPv4.IsValid() || a.v4.contains(al.IPv4)
		okv6 := !al.IPv6.IsValid() || a.v6.contains(al.IPv6)
		if !okv4 || !okv6 {
			a.log.Warn("dropping restored allocation outside the pod cidrs",
				"container_id", sa.ContainerID, "ifname", sa.Ifname, "ipv4", sa.IPv4, "ipv6", sa.IPv6)
			continue
		}
		a.add(al)
	}
	// Continue next-fit where the previous run stopped.
	if a.v4 != nil && a.v4.contains(st.LastIPv4) {
		a.v4.cursor = st.LastIPv4
	}
	if a.v6 != nil && a.v6.contains(st.LastIPv6) {
		a.v6.cursor = st.LastIPv6
	}
}

// persist writes the state file; the caller holds mu.
func (a *Allocator) persist() error {
	if a.path == "" {
		return nil
	}
	st := &State{Version: StateVersion}
	for _, p := range []*pool{a.v4, a.v6} {
		if p != nil {
			st.CIDRs = append(st.CIDRs, p.prefix)
		}
	}
	if a.v4 != nil {
		st.LastIPv4 = a.v4.cursor
	}
	if a.v6 != nil {
		st.LastIPv6 = a.v6.cursor
	}
	for _, al := range a.allocs {
		st.Allocations = append(st.Allocations, StateAllocation{
			ContainerID: al.ContainerID, Ifname: al.Ifname, IPv4: al.IPv4, IPv6: al.IPv6,
			PodNamespace: al.PodNamespace, PodName: al.PodName,
		})
	}
	b, err := st.Marshal()
	if err != nil {
		return fmt.Errorf("ipam: encode state: %w", err)
	}
	if err := atomicfile.Write(a.path, b, 0o600); err != nil {
		return fmt.Errorf("ipam: write state: %w", err)
	}
	return nil
}
