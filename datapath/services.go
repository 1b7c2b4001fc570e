package datapath

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf"
)

// Service map flags (bpf/service.h).
const (
	svcFlagAffinity       uint32 = 0x01 // SVC_F_AFFINITY
	svcBackendTerminating uint8  = 0x01 // SVC_BE_TERMINATING
)

// Map names of the Service translation (bpf/service.h).
const (
	MapSvcFrontends = "svc_frontends"
	MapSvcSlots     = "svc_slots"
	MapSvcBackends  = "svc_backends"
	MapSvcRevNAT    = "svc_revnat"
	MapSvcConns     = "svc_conns"
	MapSvcAffinity  = "svc_affinity"
)

// Frontend is one ClusterIP, port and protocol of a Service.
type Frontend struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8 // IPPROTO_TCP or IPPROTO_UDP
}

// Backend is one endpoint address and target port behind a Frontend.
// A terminating backend keeps the connections it has and gets no new one.
type Backend struct {
	Addr        netip.Addr
	Port        uint16
	Terminating bool
}

// ServiceFrontend is what the datapath translates one Frontend to.
// Affinity > 0 is sessionAffinity ClientIP with that timeout.
type ServiceFrontend struct {
	Frontend Frontend
	Backends []Backend
	Affinity time.Duration
}

type svcState struct {
	key      loupeSvcKey
	slots    []uint32                  // ready backend ids, by slot
	backends map[netip.AddrPort]uint32 // every backend id, ready or terminating
	flags    map[uint32]uint8
}

// Services writes the Service maps incrementally: a changed backend
// costs the map writes of that change only. Safe for concurrent use.
type Services struct {
	fe, slots, be, revnat *ebpf.Map

	mu     sync.Mutex
	state  map[uint32]*svcState // by frontend id
	nextBE uint32
}

// Services returns the writer of d's Service maps. Entries already in the
// pinned maps (from an agent before a restart) stay until Sync; new
// backend ids start above theirs, so a connection's remembered backend id
// never names another backend.
func (d *Datapath) Services() (*Services, error) {
	s := &Services{
		fe: d.objs.SvcFrontends, slots: d.objs.SvcSlots, be: d.objs.SvcBackends, revnat: d.objs.SvcRevnat,
		state: map[uint32]*svcState{},
	}
	var (
		bid uint32
		bv  loupeSvcBackend
	)
	it := s.be.Iterate()
	for it.Next(&bid, &bv) {
		s.nextBE = max(s.nextBE, bid)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("services: %w", err)
	}
	return s, nil
}

func frontendKey(f Frontend) (loupeSvcKey, error) {
	if !f.Addr.IsValid() {
		return loupeSvcKey{}, errors.New("frontend without address")
	}
	if f.Proto != 6 && f.Proto != 17 {
		return loupeSvcKey{}, fmt.Errorf("frontend protocol %d: only TCP and UDP are translated", f.Proto)
	}
	a := f.Addr.Unmap()
	k := loupeSvcKey{Addr: addrBytes(a), Port: f.Port, Proto: f.Proto, Family: 6}
	if a.Is4() {
		k.Family = 4
	}
	return k, nil
}

// Set installs or updates frontend id (non-zero). Writes go in an order
// that never lets a new connection pick a backend that is gone: new
// backends first, then slots, then the count, then removals.
func (s *Services) Set(id uint32, sf ServiceFrontend) error {
	if id == 0 {
		return errors.New("set service: frontend id 0")
	}
	key, err := frontendKey(sf.Frontend)
	if err != nil {
		return fmt.Errorf("set service %d: %w", id, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state[id]
	if st == nil {
		st = &svcState{key: key, backends: map[netip.AddrPort]uint32{}, flags: map[uint32]uint8{}}
		s.state[id] = st
	} else if st.key != key {
		if err := deleteKey(s.fe, st.key); err != nil {
			return fmt.Errorf("set service %d: %w", id, err)
		}
		st.key = key
	}
	want := map[netip.AddrPort]uint8{}
	var ready []netip.AddrPort
	for _, b := range sf.Backends {
		ap := netip.AddrPortFrom(b.Addr.Unmap(), b.Port)
		if b.Addr.Unmap().Is4() != key.isV4() {
			return fmt.Errorf("set service %d: backend %s is not of the frontend's family", id, ap)
		}
		if _, dup := want[ap]; dup {
			continue
		}
		if b.Terminating {
			want[ap] = svcBackendTerminating
		} else {
			want[ap] = 0
			ready = append(ready, ap)
		}
	}
	// 1. Backend entries: new ones and changed flags.
	for ap, fl := range want {
		bid, ok := st.backends[ap]
		if ok && st.flags[bid] == fl {
			continue
		}
		if !ok {
			s.nextBE++
			bid = s.nextBE
		}
		v := loupeSvcBackend{Addr: addrBytes(ap.Addr()), Port: ap.Port(), Family: key.Family, Flags: fl}
		if err := s.be.Put(bid, v); err != nil {
			return fmt.Errorf("set service %d: backend %s: %w", id, ap, err)
		}
		st.backends[ap], st.flags[bid] = bid, fl
	}
	// 2. Slots: the ready backends that stay keep their order; new ones follow.
	readyIDs := map[uint32]bool{}
	for _, ap := range ready {
		readyIDs[st.backends[ap]] = true
	}
	var target []uint32
	for _, bid := range st.slots {
		if readyIDs[bid] {
			target = append(target, bid)
			delete(readyIDs, bid)
		}
	}
	for _, ap := range ready {
		if bid := st.backends[ap]; readyIDs[bid] {
			target = append(target, bid)
			delete(readyIDs, bid)
		}
	}
	for i, bid := range target {
		if i < len(st.slots) && st.slots[i] == bid {
			continue
		}
		if err := s.slots.Put(loupeSvcSlotKey{Id: id, Slot: uint32(i)}, bid); err != nil {
			return fmt.Errorf("set service %d: slot %d: %w", id, i, err)
		}
	}
	// 3. The reverse entry and the frontend with its count.
	if err := s.revnat.Put(id, key); err != nil {
		return fmt.Errorf("set service %d: reverse entry: %w", id, err)
	}
	fe := loupeSvcFrontend{Id: id, Count: uint32(len(target))}
	if sf.Affinity > 0 {
		fe.Flags |= svcFlagAffinity
		fe.AffinityTimeout = uint32(max(sf.Affinity/time.Second, 1))
	}
	if err := s.fe.Put(key, fe); err != nil {
		return fmt.Errorf("set service %d: frontend: %w", id, err)
	}
	// 4. Removals: slots past the count, then backends no longer wanted.
	for i := len(target); i < len(st.slots); i++ {
		if err := deleteKey(s.slots, loupeSvcSlotKey{Id: id, Slot: uint32(i)}); err != nil {
			return fmt.Errorf("set service %d: %w", id, err)
		}
	}
	st.slots = target
	for ap, bid := range st.backends {
		if _, ok := want[ap]; ok {
			continue
		}
		if err := deleteKey(s.be, bid); err != nil {
			return fmt.Errorf("set service %d: %w", id, err)
		}
		delete(st.backends, ap)
		delete(st.flags, bid)
	}
	return nil
}

func (k loupeSvcKey) isV4() bool { return k.Family == 4 }

func deleteKey(m *ebpf.Map, k any) error {
	if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete from %s: %w", m, err)
	}
	return nil
}

// Delete removes frontend id; its connections' replies are no longer
// translated back.
func (s *Services) Delete(id uint32) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state[id]
	if st == nil {
		return nil
	}
	if err := deleteKey(s.fe, st.key); err != nil {
		return fmt.Errorf("delete service %d: %w", id, err)
	}
	for i := range st.slots {
		if err := deleteKey(s.slots, loupeSvcSlotKey{Id: id, Slot: uint32(i)}); err != nil {
			return fmt.Errorf("delete service %d: %w", id, err)
		}
	}
	for _, bid := range st.backends {
		if err := deleteKey(s.be, bid); err != nil {
			return fmt.Errorf("delete service %d: %w", id, err)
		}
	}
	if err := deleteKey(s.revnat, id); err != nil {
		return fmt.Errorf("delete service %d: %w", id, err)
	}
	delete(s.state, id)
	return nil
}

// Sync removes every map entry that no Set of this writer made: what an
// agent before a restart left for Services that are gone. Call it after
// the first full round of Set.
func (s *Services) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	keepBE := map[uint32]bool{}
	for _, st := range s.state {
		for _, bid := range st.backends {
			keepBE[bid] = true
		}
	}
	var (
		fk  loupeSvcKey
		fv  loupeSvcFrontend
		sk  loupeSvcSlotKey
		sv  uint32
		bid uint32
		bv  loupeSvcBackend
		rk  uint32
		rv  loupeSvcKey
	)
	var errs []error
	var stale []any
	it := s.fe.Iterate()
	for it.Next(&fk, &fv) {
		if st := s.state[fv.Id]; st == nil || st.key != fk {
			stale = append(stale, fk)
		}
	}
	errs = append(errs, it.Err(), deleteAll(s.fe, stale))
	stale = nil
	it = s.slots.Iterate()
	for it.Next(&sk, &sv) {
		if st := s.state[sk.Id]; st == nil || int(sk.Slot) >= len(st.slots) {
			stale = append(stale, sk)
		}
	}
	errs = append(errs, it.Err(), deleteAll(s.slots, stale))
	stale = nil
	it = s.be.Iterate()
	for it.Next(&bid, &bv) {
		if !keepBE[bid] {
			stale = append(stale, bid)
		}
	}
	errs = append(errs, it.Err(), deleteAll(s.be, stale))
	stale = nil
	it = s.revnat.Iterate()
	for it.Next(&rk, &rv) {
		if s.state[rk] == nil {
			stale = append(stale, rk)
		}
	}
	errs = append(errs, it.Err(), deleteAll(s.revnat, stale))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sync services: %w", err)
	}
	return nil
}

func deleteAll(m *ebpf.Map, keys []any) error {
	for _, k := range keys {
		if err := deleteKey(m, k); err != nil {
			return err
		}
	}
	return nil
}

// Frontends lists the installed frontend ids with their ready backend count.
func (s *Services) Frontends() map[uint32]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[uint32]int, len(s.state))
	for id, st := range s.state {
		out[id] = len(st.slots)
	}
	return out
}

// ReadyBackends returns frontend id's ready backends, by slot.
func (s *Services) ReadyBackends(id uint32) []netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state[id]
	if st == nil {
		return nil
	}
	var out []netip.AddrPort
	for _, bid := range st.slots {
		for ap, b := range st.backends {
			if b == bid {
				out = append(out, ap)
			}
		}
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return out
}

// Installed returns the frontend ids in the maps, by frontend, as a
// previous agent left them: a new agent keeps them, since conntrack and
// the connections' backend choices name frontends by id.
func (s *Services) Installed() (map[Frontend]uint32, error) {
	var (
		id uint32
		k  loupeSvcKey
	)
	out := map[Frontend]uint32{}
	it := s.revnat.Iterate()
	for it.Next(&id, &k) {
		a := netip.AddrFrom16(k.Addr)
		if k.Family == 4 {
			a = netip.AddrFrom4([4]byte(k.Addr[:4]))
		}
		out[Frontend{Addr: a, Port: k.Port, Proto: k.Proto}] = id
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("installed services: %w", err)
	}
	return out, nil
}
