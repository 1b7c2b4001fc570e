package agent

import (
	"context"
	"errors"
	"maps"
	"net/netip"
	"sync"
)

// memDatapath is an in-memory endpoint map standing in for the pinned BPF
// map in unit tests.
type memDatapath struct {
	mu      sync.Mutex
	eps     map[uint32]EndpointInfo
	ipc     map[netip.Prefix]uint32
	failPut bool // make UpsertEndpoint fail
	upserts int
}

func newMemDatapath() *memDatapath {
	return &memDatapath{eps: map[uint32]EndpointInfo{}, ipc: map[netip.Prefix]uint32{}}
}

var errInjected = errors.New("injected failure")

func (m *memDatapath) UpsertEndpoint(idx uint32, ep EndpointInfo) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failPut {
		return errInjected
	}
	m.upserts++
	m.eps[idx] = ep
	return nil
}

func (m *memDatapath) DeleteEndpoint(idx uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.eps, idx)
	return nil
}

func (m *memDatapath) Endpoints() (map[uint32]EndpointInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.eps), nil
}

func (m *memDatapath) ReadEvents(ctx context.Context, _ func([]byte)) error {
	<-ctx.Done()
	return nil
}

func (m *memDatapath) Close() error { return nil }

func (m *memDatapath) UpsertIPCache(p netip.Prefix, id uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ipc[p] = id
	return nil
}

func (m *memDatapath) DeleteIPCache(p netip.Prefix) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.ipc, p)
	return nil
}

func (m *memDatapath) IPCache() (map[netip.Prefix]uint32, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.ipc), nil
}
