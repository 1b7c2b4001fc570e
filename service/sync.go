package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// Writer is the datapath's Service maps (*datapath.Services).
type Writer interface {
	Set(id uint32, sf datapath.ServiceFrontend) error
	Delete(id uint32) error
	Sync() error
	Installed() (map[datapath.Frontend]uint32, error)
}

// Syncer keeps a Writer in step with snapshots: each Apply writes the
// frontends that changed and deletes the ones that are gone.
type Syncer struct {
	w Writer

	mu     sync.RWMutex
	ids    map[datapath.Frontend]uint32
	refs   map[uint32]Ref
	last   map[uint32]datapath.ServiceFrontend
	next   uint32
	synced bool
	// cache holds each Service's frontends with the objects they came
	// from: snapshots share unchanged objects, so a change recomputes only
	// the Services whose Service or EndpointSlice objects are new.
	cache map[[2]string]cachedService
}

type cachedService struct {
	svc *corev1.Service
	eps []*discoveryv1.EndpointSlice
	fs  []Frontend
}

// frontends is Frontends(snap), reusing the cache for unchanged Services.
func (s *Syncer) frontends(snap *metadata.Snapshot) []Frontend {
	bySvc := slicesByService(snap.EndpointSlices)
	next := make(map[[2]string]cachedService, len(snap.Services))
	var out []Frontend
	for _, svc := range snap.Services {
		k := [2]string{svc.Namespace, svc.Name}
		eps := bySvc[k]
		c, ok := s.cache[k]
		if !ok || c.svc != svc || !slices.Equal(c.eps, eps) {
			c = cachedService{svc: svc, eps: eps, fs: serviceFrontends(svc, eps)}
		}
		next[k] = c
		out = append(out, c.fs...)
	}
	s.cache = next
	return out
}

// NewSyncer starts from the frontend ids w already holds.
func NewSyncer(w Writer) (*Syncer, error) {
	ids, err := w.Installed()
	if err != nil {
		return nil, err
	}
	// With no frontend installed there is nothing of a previous agent's
	// to clean up (frontends and their reverse entries go together).
	s := &Syncer{w: w, ids: ids, refs: map[uint32]Ref{}, last: map[uint32]datapath.ServiceFrontend{}, synced: len(ids) == 0}
	for _, id := range ids {
		s.next = max(s.next, id)
	}
	return s, nil
}

// Lookup names the Service port of frontend id (the events' ServiceID).
func (s *Syncer) Lookup(id uint32) (Ref, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.refs[id]
	return r, ok
}

func sameFrontend(a, b datapath.ServiceFrontend) bool {
	return a.Frontend == b.Frontend && a.Affinity == b.Affinity && slices.Equal(a.Backends, b.Backends)
}

// Apply brings the datapath to snap's frontends; it returns how many it
// wrote (set or deleted). A failed write is retried by the next Apply.
func (s *Syncer) Apply(snap *metadata.Snapshot) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs := s.frontends(snap)
	var errs []error
	wrote := 0
	live := make(map[uint32]bool, len(fs))
	for _, f := range fs {
		id, ok := s.ids[f.Frontend]
		if !ok {
			s.next++
			id = s.next
			s.ids[f.Frontend] = id
		}
		if live[id] {
			continue // two Services claim one ClusterIP:port: the first wins
		}
		live[id] = true
		s.refs[id] = f.Ref
		if old, ok := s.last[id]; ok && sameFrontend(old, f.ServiceFrontend) {
			continue
		}
		if err := s.w.Set(id, f.ServiceFrontend); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s port %q: %w", f.Namespace, f.Name, f.Ref.Port, err))
			delete(s.last, id)
			continue
		}
		s.last[id] = f.ServiceFrontend
		wrote++
	}
	for fe, id := range s.ids {
		if live[id] {
			continue
		}
		if err := s.w.Delete(id); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(s.ids, fe)
		delete(s.refs, id)
		delete(s.last, id)
		wrote++
	}
	if !s.synced && len(errs) == 0 {
		// Entries of a previous agent that no Set touched go now.
		if err := s.w.Sync(); err != nil {
			errs = append(errs, err)
		} else {
			s.synced = true
		}
	}
	return wrote, errors.Join(errs...)
}

// Run applies every snapshot of src until ctx ends.
func (s *Syncer) Run(ctx context.Context, src metadata.Source, log *slog.Logger) error {
	ch := src.Subscribe(ctx)
	for {
		n, err := s.Apply(src.Current())
		if err != nil {
			log.Warn("service translation: some frontends were not written; retried on the next change", "err", err)
		} else if n > 0 {
			log.Debug("service translation applied", "writes", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ch:
			if !ok {
				return nil
			}
		}
	}
}
