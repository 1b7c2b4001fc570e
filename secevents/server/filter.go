// Package server keeps an agent's security events in a bounded buffer and
// serves them on the SecurityEvents gRPC service; loupe-relay uses its
// filters to merge agents' answers.
package server

import (
	"fmt"
	"slices"
	"strings"

	pb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/secevents"
)

// Filter is a GetEventsRequest's filters, parsed once.
type Filter struct {
	since      int64
	namespaces []string
	pods       []string // "name" or "ns/name"
	rules      []string
	minPrio    secevents.Priority
	anyPrio    bool
}

// NewFilter checks and parses the request's filters.
func NewFilter(req *pb.GetEventsRequest) (*Filter, error) {
	f := &Filter{since: req.GetSinceUnixNano(), namespaces: req.GetNamespace(), pods: req.GetPod(), rules: req.GetRule(), anyPrio: true}
	if p := req.GetMinPriority(); p != "" {
		prio, err := secevents.ParsePriority(p)
		if err != nil {
			return nil, fmt.Errorf("min_priority: %w", err)
		}
		f.minPrio, f.anyPrio = prio, false
	}
	return f, nil
}

// Match tells whether a response passes. Lost events always pass (they
// may have held a matching event), unless they are older than since.
func (f *Filter) Match(r *pb.GetEventsResponse) bool {
	if f.since != 0 && r.GetTimeUnixNano() < f.since {
		return false
	}
	ev := r.GetEvent()
	if ev == nil {
		return true
	}
	if len(f.namespaces) > 0 && !slices.Contains(f.namespaces, ev.GetNamespace()) {
		return false
	}
	if len(f.pods) > 0 && !slices.ContainsFunc(f.pods, func(p string) bool {
		if ns, name, ok := strings.Cut(p, "/"); ok {
			return ns == ev.GetNamespace() && name == ev.GetPod()
		}
		return p == ev.GetPod()
	}) {
		return false
	}
	if len(f.rules) > 0 && !slices.Contains(f.rules, ev.GetRule()) {
		return false
	}
	if !f.anyPrio {
		p, err := secevents.ParsePriority(ev.GetPriority())
		if err != nil || p > f.minPrio {
			return false
		}
	}
	return true
}

// Last keeps the last n events of rs (lost events among them stay); n 0
// keeps all.
func Last(rs []*pb.GetEventsResponse, n uint64) []*pb.GetEventsResponse {
	if n == 0 {
		return rs
	}
	var seen uint64
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].GetEvent() != nil {
			seen++
			if seen == n {
				return rs[i:]
			}
		}
	}
	return rs
}
