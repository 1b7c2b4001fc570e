// Package hubblemetrics exports Hubble's flow metrics (hubble_*) with
// Hubble's names, labels, semantics and --hubble-metrics option syntax, so
// that dashboards written for Hubble read loupe's agent unchanged. One
// file per family; this one holds the registry of families and the Set
// the observer feeds every flow to.
package hubblemetrics

import (
	"fmt"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
)

// family is one metric family: Hubble's option flags it takes besides the
// context options, and how to build its handler.
type family struct {
	flags []string // lower case
	build func(ctx *contexts, flags map[string]bool) handler
}

// handler counts one flow. Handlers are called from one goroutine.
type handler interface {
	observe(f *flowpb.Flow)
	vec() *vec
	contexts() *contexts
}

// multiHandler is a handler of a family with more than one metric (dns).
type multiHandler interface {
	more() []*vec
}

// collectorHandler is a handler with metrics other than counters (http's
// histogram), registered as they are.
type collectorHandler interface {
	collectors() []prometheus.Collector
}

// vecsOf lists every counter metric of h.
func vecsOf(h handler) []*vec {
	if m, ok := h.(multiHandler); ok {
		return append([]*vec{h.vec()}, m.more()...)
	}
	return []*vec{h.vec()}
}

var families = map[string]family{
	"flow":              {build: newFlowHandler},
	"drop":              {build: newDropHandler},
	"tcp":               {build: newTCPHandler},
	"icmp":              {build: newICMPHandler},
	"port-distribution": {build: newPortDistributionHandler},
	"policy":            {build: newPolicyHandler},
	"flows-to-world":    {flags: []string{"any-drop", "port", "syn-only"}, build: newFlowsToWorldHandler},
	"dns":               {flags: []string{"query", "ignoreaaaa"}, build: newDNSHandler},
	"http":              {build: newHTTPHandler},
}

// FamilyNames lists the families --metrics accepts.
func FamilyNames() []string {
	var out []string
	for k := range families {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Set is the enabled families. Observe is not safe for concurrent use:
// the observer calls it from its one decoding goroutine.
type Set struct {
	handlers []handler
	lost     *prometheus.CounterVec
}

// New builds the handlers of specs and registers their metrics, and
// hubble_lost_events_total when any family is enabled (as Hubble does).
func New(reg prometheus.Registerer, specs []Spec) (*Set, error) {
	s := &Set{}
	for _, sp := range specs {
		fam, ok := families[sp.Name]
		if !ok {
			return nil, fmt.Errorf("metric %q does not exist", sp.Name)
		}
		flags := map[string]bool{}
		for _, o := range sp.Options {
			if lk := strings.ToLower(o.Key); slices.Contains(fam.flags, lk) {
				flags[lk] = true
			}
		}
		h := fam.build(newContexts(sp.Options), flags)
		for _, v := range vecsOf(h) {
			if err := reg.Register(v.cv); err != nil {
				return nil, fmt.Errorf("metric %q: %w", sp.Name, err)
			}
		}
		if ch, ok := h.(collectorHandler); ok {
			for _, c := range ch.collectors() {
				if err := reg.Register(c); err != nil {
					return nil, fmt.Errorf("metric %q: %w", sp.Name, err)
				}
			}
		}
		s.handlers = append(s.handlers, h)
	}
	if len(s.handlers) > 0 {
		s.lost = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hubble", Name: "lost_events_total",
			Help: "Number of lost events",
		}, []string{"source"})
		if err := reg.Register(s.lost); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Observe counts f in every enabled family.
func (s *Set) Observe(f *flowpb.Flow) {
	for _, h := range s.handlers {
		h.observe(f)
	}
}

// labelErrors counts the label sets the families could not export.
func (s *Set) labelErrors() (n int) {
	for _, h := range s.handlers {
		for _, v := range vecsOf(h) {
			n += v.errs
		}
	}
	return n
}

// Lost counts n events lost at src, as Hubble's source label names it
// (the enum in lower case: perf_event_ring_buffer, hubble_ring_buffer, ...).
func (s *Set) Lost(src flowpb.LostEventSource, n uint64) {
	if s.lost == nil || n == 0 {
		return
	}
	s.lost.WithLabelValues(strings.ToLower(src.String())).Add(float64(n))
}

// maxCached bounds each family's cache of resolved counters: a label set
// beyond it is still counted, through the slower lookup, after the cache
// is emptied. The series themselves are bounded by the contexts chosen.
const maxCached = 4096

// vec is a CounterVec with a cache from label values to the counter, so a
// flow costs one map lookup keyed by its label values, without allocating.
type vec struct {
	cv    *prometheus.CounterVec
	cache map[string]prometheus.Counter
	key   []byte
	lv    []string // scratch label values
	errs  int      // label sets refused (not UTF-8, or a bug: wrong count)
}

func newVec(name, help string, labels []string) *vec {
	return &vec{
		cv: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hubble", Name: name, Help: help,
		}, labels),
		cache: map[string]prometheus.Counter{},
	}
}

func (v *vec) inc(lv []string) {
	v.key = v.key[:0]
	for _, s := range lv {
		v.key = append(v.key, s...)
		v.key = append(v.key, 0xff) // not in any UTF-8 string
	}
	c, ok := v.cache[string(v.key)]
	if !ok {
		var err error
		if c, err = v.cv.GetMetricWithLabelValues(lv...); err != nil {
			v.errs++
			return
		}
		if len(v.cache) >= maxCached {
			clear(v.cache)
		}
		v.cache[string(v.key)] = c
	}
	c.Inc()
}

// flowProtocol is Hubble's v1.FlowProtocol: the protocol label of flow,
// drop and flows-to-world.
func flowProtocol(f *flowpb.Flow) string {
	switch f.GetEventType().GetType() {
	case typeAccessLog:
		switch l7 := f.GetL7(); {
		case l7.GetDns() != nil:
			return "DNS"
		case l7.GetHttp() != nil:
			return "HTTP"
		}
		return "Unknown L7"
	case typeDrop, typeTrace, typePolicyVerdict, typeCapture:
		l4 := f.GetL4()
		switch {
		case l4 == nil:
		case l4.GetTCP() != nil:
			return "TCP"
		case l4.GetUDP() != nil:
			return "UDP"
		case l4.GetICMPv4() != nil:
			return "ICMPv4"
		case l4.GetICMPv6() != nil:
			return "ICMPv6"
		case l4.GetSCTP() != nil:
			return "SCTP"
		case l4.GetVRRP() != nil:
			return "VRRP"
		case l4.GetIGMP() != nil:
			return "IGMP"
		}
		return "Unknown L4"
	}
	return "Unknown flow"
}
