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

// vec is a CounterVec with two caches of resolved counters: one keyed by
// the label values, and one by a countKey for the families that can pack
// a flow's labels into one (see countKey).
type vec struct {
	cv    *prometheus.CounterVec
	cache map[string]prometheus.Counter
	byKey map[countKey]prometheus.Counter
	// byOwn is byKey for the families without contexts: a uint64 key
	// hashes faster than a countKey.
	byOwn map[uint64]prometheus.Counter
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
		byKey: map[countKey]prometheus.Counter{},
		byOwn: map[uint64]prometheus.Counter{},
	}
}

func (v *vec) inc(lv []string) {
	if c := v.counter(lv); c != nil {
		c.Inc()
	}
}

// counter is the counter of the label values lv; nil if they are refused.
func (v *vec) counter(lv []string) prometheus.Counter {
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
			return nil
		}
		if len(v.cache) >= maxCached {
			clear(v.cache)
		}
		v.cache[string(v.key)] = c
	}
	return c
}

// countKey names a family's series by what its labels are computed from,
// instead of by the labels: the flow's endpoints (zero without contexts)
// and the family's own labels' inputs, packed by its handler into own.
// Hashing it costs a few words, where counter joins and hashes every
// label value, most of a family's cost per flow. It exists only when
// the contexts read nothing but the endpoints (contexts.byEndpoints).
type countKey struct {
	eps endpointsKey
	own uint64
}

// keyed returns f's countKey with the family's labels packed in own, or
// false when the contexts read more than the endpoints or own did not
// fit (packed reports that).
func (c *contexts) keyed(f *flowpb.Flow, own uint64, packed bool) (countKey, bool) {
	if !packed || c.byEndpoints == nil {
		return countKey{}, false
	}
	k := countKey{own: own}
	if len(c.labels) > 0 || c.hasSource || c.hasDestLbl {
		k.eps = endpointsKey{src: f.GetSource(), dst: f.GetDestination(), dir: f.GetTrafficDirection()}
	}
	return k, true
}

// incKeyed counts in the series cached under k (when ok) and reports
// whether it was there; if not, the caller counts through incAs.
func (v *vec) incKeyed(k countKey, ok bool) bool {
	if !ok {
		return false
	}
	var c prometheus.Counter
	if k.eps == (endpointsKey{}) {
		c = v.byOwn[k.own]
	} else {
		c = v.byKey[k]
	}
	if c == nil {
		return false
	}
	c.Inc()
	return true
}

// incAs counts in the series of the label values lv and, when ok,
// caches it under k.
func (v *vec) incAs(k countKey, ok bool, lv []string) {
	c := v.counter(lv)
	if c == nil {
		return
	}
	c.Inc()
	switch {
	case !ok || v.byKey == nil: // nil: a test's vec without the cache
	case k.eps == (endpointsKey{}):
		setBounded(v.byOwn, k.own, c)
	default:
		setBounded(v.byKey, k, c)
	}
}

// setBounded sets m[k], emptying m first when it holds maxCached.
func setBounded[K comparable](m map[K]prometheus.Counter, k K, c prometheus.Counter) {
	if len(m) >= maxCached {
		clear(m)
	}
	m[k] = c
}

// pack packs the inputs of a family's labels into a countKey's own: 16
// bits for each of w0 and w1, 8 for each of s0, s1 and s2. false when one
// does not fit.
func pack(w0, w1, s0, s1, s2 int64) (uint64, bool) {
	if uint64(w0)|uint64(w1) > 0xffff || uint64(s0)|uint64(s1)|uint64(s2) > 0xff {
		return 0, false
	}
	return uint64(w0) | uint64(w1)<<16 | uint64(s0)<<32 | uint64(s1)<<40 | uint64(s2)<<48, true
}

// flowProtocol is Hubble's v1.FlowProtocol: the protocol label of flow,
// drop and flows-to-world.
func flowProtocol(f *flowpb.Flow) string {
	switch f.GetEventType().GetType() {
	case typeAccessLog:
		return l7Names[l7Kind(f.GetL7())]
	case typeDrop, typeTrace, typePolicyVerdict, typeCapture:
		return l4Names[l4Kind(f.GetL4())]
	}
	return "Unknown flow"
}

// The kinds of L4 and L7 a flow's labels tell apart, so that a countKey
// can carry them as numbers.
const (
	l4Unknown = iota
	l4TCP
	l4UDP
	l4ICMPv4
	l4ICMPv6
	l4SCTP
	l4VRRP
	l4IGMP
)

var l4Names = [...]string{l4Unknown: "Unknown L4", l4TCP: "TCP", l4UDP: "UDP", l4ICMPv4: "ICMPv4",
	l4ICMPv6: "ICMPv6", l4SCTP: "SCTP", l4VRRP: "VRRP", l4IGMP: "IGMP"}

func l4Kind(l4 *flowpb.Layer4) int64 {
	switch {
	case l4 == nil:
	case l4.GetTCP() != nil:
		return l4TCP
	case l4.GetUDP() != nil:
		return l4UDP
	case l4.GetICMPv4() != nil:
		return l4ICMPv4
	case l4.GetICMPv6() != nil:
		return l4ICMPv6
	case l4.GetSCTP() != nil:
		return l4SCTP
	case l4.GetVRRP() != nil:
		return l4VRRP
	case l4.GetIGMP() != nil:
		return l4IGMP
	}
	return l4Unknown
}

const (
	l7Unknown = iota
	l7DNS
	l7HTTP
)

var l7Names = [...]string{l7Unknown: "Unknown L7", l7DNS: "DNS", l7HTTP: "HTTP"}

func l7Kind(l7 *flowpb.Layer7) int64 {
	switch {
	case l7.GetDns() != nil:
		return l7DNS
	case l7.GetHttp() != nil:
		return l7HTTP
	}
	return l7Unknown
}
