package ui

import (
	"cmp"
	"encoding/json"
	"slices"
	"time"

	respb "github.com/loupe-project/loupe/api/resources/v1"
	secpb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/resources"
	"github.com/loupe-project/loupe/secevents"
)

// A workload's health beside its traffic: its recent security events
// (issue #23) and how starved its pods are (issue #27), from the relay's
// SecurityEvents and Resources services. Browsers get one small view per
// workload that has either, never an event stream: at most
// maxEventsPerWorkload events each, and counts.
const (
	DefaultSecurityWindow    = time.Hour
	DefaultResourcesInterval = 10 * time.Second
	maxSecurityWindow        = 24 * time.Hour
	maxEventsPerWorkload     = 12
	maxRulesPerPod           = 32
	maxSecurityPods          = 4096 // pods with events kept; past it the quietest go
	windowSlots              = 60   // a pod's event counts, in window/60 slots
)

// WorkloadHealth is what a browser shows of one workload beside its
// traffic. Either part may be missing.
type WorkloadHealth struct {
	// Events are the latest event of each rule that fired for the
	// workload in the window, newest first, at most maxEventsPerWorkload
	// rules (so that a burst of one rule hides no other); EventCount
	// counts all its events (to window/60) and Priority is the most
	// severe.
	Events     []SecEventView `json:"events,omitempty"`
	EventCount uint64         `json:"eventCount,omitempty"`
	Priority   string         `json:"priority,omitempty"`
	Resources  *ResourceView  `json:"res,omitempty"`
}

// SecEventView is one security event as the side panel lists it: no
// output text, argv or payload, only what names the event.
type SecEventView struct {
	Time     int64  `json:"t"` // unix ms
	Rule     string `json:"rule"`
	Count    uint64 `json:"count"` // the rule's events in the window, this one included
	Priority string `json:"priority"`
	Pod      string `json:"pod,omitempty"`
	Node     string `json:"node,omitempty"`
	Process  string `json:"process,omitempty"` // name
	PID      uint32 `json:"pid,omitempty"`
	File     string `json:"file,omitempty"`
	Action   string `json:"action,omitempty"` // kill
	// Network rules: the peer (destination address, port and protocol)
	// and the DNS query.
	PeerIP   string `json:"peerIP,omitempty"`
	PeerPort uint32 `json:"peerPort,omitempty"`
	Proto    string `json:"proto,omitempty"`
	Query    string `json:"query,omitempty"`
}

// ResourceView is a workload's resource pressure over the last interval
// between two answers of the relay's Resources service, its pods' kernel
// histograms summed before the quantile is taken.
type ResourceView struct {
	Pods       int     `json:"pods"`
	RunqP99Us  float64 `json:"runqP99Us"`
	IOP99Us    float64 `json:"ioP99Us"`
	IOOps      uint64  `json:"ioOps"`      // in the interval
	CPUSeconds float64 `json:"cpuSeconds"` // in the interval
	OOMKills   uint64  `json:"oomKills"`   // since its pods appeared
	Interval   int64   `json:"intervalMs"`
	Time       int64   `json:"t"` // unix ms of the later answer
}

type podRef struct{ ns, pod string }

// podEvents is one pod's events in the window: counts per slot of
// window/windowSlots with the slot's most severe priority (all events,
// whatever rules were evicted), and by rule.
type podEvents struct {
	slots map[int64]slotCount
	rules map[string]*ruleEvents
	last  int64 // unix ns of the newest event
}

type slotCount struct {
	n    uint64
	prio secevents.Priority
}

// ruleEvents is one rule's events of a pod: the latest in full, and
// counts per slot of window/windowSlots.
type ruleEvents struct {
	latest SecEventView
	prio   secevents.Priority
	slots  map[int64]uint64
}

// health keeps the workloads' health. It is not safe for concurrent use
// (the Server's lock guards it).
type health struct {
	window time.Duration
	pods   map[podRef]*podEvents
	lost   uint64 // security events lost upstream

	prevRes  map[resources.Key]*respb.PodResources
	prevAt   time.Time
	res      map[string]*ResourceView // by map node id
	workload map[podRef]string        // pod -> workload, from the Resources answers

	views   map[string]*WorkloadHealth // as last computed
	sent    map[string]string          // id -> JSON the browsers have
	changed bool
	nextAt  time.Time // when a slot of the window expires
	guessed bool      // a pod was not found on the map: look again later
	retryAt time.Time
}

func newHealth(window time.Duration) *health {
	if window <= 0 {
		window = DefaultSecurityWindow
	}
	return &health{window: min(window, maxSecurityWindow), pods: map[podRef]*podEvents{},
		res: map[string]*ResourceView{}, workload: map[podRef]string{}, views: map[string]*WorkloadHealth{},
		sent: map[string]string{}}
}

func (h *health) slot(t int64) int64 { return t / int64(h.window/windowSlots) }

// addEvent keeps one security event of the relay's stream.
func (h *health) addEvent(ev *secpb.SecurityEvent, now time.Time) {
	t := ev.GetTimeUnixNano()
	if t == 0 {
		t = now.UnixNano()
	}
	if now.UnixNano()-t > int64(h.window) {
		return
	}
	prio, err := secevents.ParsePriority(ev.GetPriority())
	if err != nil {
		prio = secevents.Debug
	}
	k := podRef{ev.GetNamespace(), ev.GetPod()}
	p := h.pods[k]
	if p == nil {
		if len(h.pods) >= maxSecurityPods {
			h.evictQuietest()
		}
		p = &podEvents{slots: map[int64]slotCount{}, rules: map[string]*ruleEvents{}}
		h.pods[k] = p
	}
	v := SecEventView{Time: t / 1e6, Rule: ev.GetRule(), Priority: prio.String(), Pod: ev.GetPod(),
		Node: ev.GetNodeName(), Process: ev.GetProcess().GetName(), PID: ev.GetProcess().GetPid(),
		File: ev.GetFile(), Action: ev.GetAction(), PeerIP: ev.GetDestinationIp(), PeerPort: ev.GetDestinationPort(),
		Proto: ev.GetL4Protocol(), Query: ev.GetDnsQuery()}
	r := p.rules[v.Rule]
	if r == nil {
		if len(p.rules) >= maxRulesPerPod {
			p.evictOldestRule()
		}
		r = &ruleEvents{latest: v, prio: prio, slots: map[int64]uint64{}}
		p.rules[v.Rule] = r
	}
	if v.Time >= r.latest.Time { // the merged stream may be a little out of order
		r.latest, r.prio = v, prio
	}
	s := h.slot(t)
	r.slots[s]++
	c, ok := p.slots[s]
	if !ok || prio < c.prio {
		c.prio = prio
	}
	c.n++
	p.slots[s] = c
	p.last = max(p.last, t)
	h.changed = true
}

func (p *podEvents) evictOldestRule() {
	var oldest *ruleEvents
	for _, r := range p.rules {
		if oldest == nil || r.latest.Time < oldest.latest.Time {
			oldest = r
		}
	}
	delete(p.rules, oldest.latest.Rule)
}

// evictQuietest drops the pod whose latest event is the oldest.
func (h *health) evictQuietest() {
	var oldest podRef
	first := true
	for k, p := range h.pods {
		if first || p.last < h.pods[oldest].last {
			oldest, first = k, false
		}
	}
	delete(h.pods, oldest)
}

// expire forgets events that left the window.
func (h *health) expire(now time.Time) {
	if now.Before(h.nextAt) {
		return
	}
	h.nextAt = now.Add(h.window / windowSlots)
	cut := now.Add(-h.window).UnixNano()
	first := h.slot(cut)
	for k, p := range h.pods {
		for s := range p.slots {
			if s < first {
				delete(p.slots, s)
			}
		}
		for name, r := range p.rules {
			for s := range r.slots {
				if s < first {
					delete(r.slots, s)
					h.changed = true
				}
			}
			if len(r.slots) == 0 {
				delete(p.rules, name)
			}
		}
		if len(p.slots) == 0 {
			delete(h.pods, k)
			h.changed = true
		}
	}
}

// setResources takes one answer of the Resources service: each workload's
// view covers the interval since the previous answer, so the first answer
// only sets the baseline.
func (h *health) setResources(pods []*respb.PodResources, now time.Time) {
	cur := make(map[resources.Key]*respb.PodResources, len(pods))
	type acc struct {
		pods      int
		runq, io  []uint64
		ioOps     uint64
		cpu, ooms uint64
	}
	byID := map[string]*acc{}
	workload := make(map[podRef]string, len(pods))
	for _, p := range pods {
		if p.GetNamespace() == "" {
			continue // the node's own tasks: no workload on the map
		}
		k := resources.KeyOf(p)
		cur[k] = p
		id := resourceWorkload(p)
		workload[podRef{p.GetNamespace(), p.GetPod()}] = id
		a := byID[id]
		if a == nil {
			a = &acc{}
			byID[id] = a
		}
		a.pods++
		a.ooms += p.GetOomKills()
		prev := h.prevRes[k]
		if prev == nil {
			continue // new since the last answer: no interval yet
		}
		a.runq = addInto(a.runq, resources.Sub(p.GetRunqueue(), prev.GetRunqueue()))
		io := resources.Sub(p.GetBlockIo(), prev.GetBlockIo())
		a.io = addInto(a.io, io)
		for _, c := range io {
			a.ioOps += c
		}
		if p.GetCpuNs() >= prev.GetCpuNs() {
			a.cpu += p.GetCpuNs() - prev.GetCpuNs()
		}
	}
	res := make(map[string]*ResourceView, len(byID))
	if !h.prevAt.IsZero() {
		for id, a := range byID {
			res[id] = &ResourceView{Pods: a.pods, RunqP99Us: roundTo(resources.Quantile(a.runq, 0.99)/1e3, 1),
				IOP99Us: roundTo(resources.Quantile(a.io, 0.99)/1e3, 1), IOOps: a.ioOps,
				CPUSeconds: roundTo(float64(a.cpu)/1e9, 3), OOMKills: a.ooms,
				Interval: now.Sub(h.prevAt).Milliseconds(), Time: now.UnixMilli()}
		}
	}
	h.prevRes, h.prevAt, h.res, h.workload = cur, now, res, workload
	h.changed = true
}

// resourceWorkload is the map node of a pod's resources: its namespace
// and workload (the pod's name when it has none), as the flows name it.
func resourceWorkload(p *respb.PodResources) string {
	w := p.GetWorkload()
	if w == "" {
		w = p.GetPod()
	}
	return nodeKey{p.GetNamespace(), w}.id()
}

func addInto(acc, b []uint64) []uint64 {
	if len(acc) < len(b) {
		acc = append(acc, make([]uint64, len(b)-len(acc))...)
	}
	for i, v := range b {
		acc[i] += v
	}
	return acc
}

func roundTo(v float64, digits int) float64 {
	p := 1.0
	for range digits {
		p *= 10
	}
	return float64(int64(v*p+0.5)) / p
}

// resolve names the map node of a pod with events: the workload its
// Resources row names, else the node of the flows that carried the pod
// (a Deployment's pod is on its Deployment's node), else the pod itself;
// the node's own processes are the map's host.
func (h *health) resolve(k podRef, a *Aggregator, byPod map[podRef]string) string {
	if k.ns == "" {
		return KindHost
	}
	if id, ok := h.workload[k]; ok {
		return id
	}
	if _, ok := a.nodes[nodeKey{k.ns, k.pod}]; ok {
		return nodeKey{k.ns, k.pod}.id()
	}
	if id, ok := byPod[k]; ok {
		return id
	}
	h.guessed = true
	return nodeKey{k.ns, k.pod}.id()
}

// podIndex maps the map's pods to their nodes, for pods whose events the
// cheap lookups of resolve cannot place.
func podIndex(a *Aggregator) map[podRef]string {
	out := map[podRef]string{}
	for _, n := range a.nodes {
		if n.ns == "" {
			continue
		}
		for p := range n.pods.m {
			out[podRef{n.ns, p}] = n.id
		}
	}
	return out
}

// compute rebuilds every workload's view.
func (h *health) compute(a *Aggregator) {
	views := map[string]*WorkloadHealth{}
	get := func(id string) *WorkloadHealth {
		v := views[id]
		if v == nil {
			v = &WorkloadHealth{}
			views[id] = v
		}
		return v
	}
	var byPod map[podRef]string
	for k, p := range h.pods {
		if byPod == nil && k.ns != "" && h.workload[k] == "" {
			if _, ok := a.nodes[nodeKey{k.ns, k.pod}]; !ok {
				byPod = podIndex(a)
			}
		}
		v := get(h.resolve(k, a, byPod))
		top := secevents.Debug + 1
		if v.Priority != "" {
			top, _ = secevents.ParsePriority(v.Priority)
		}
		for _, c := range p.slots {
			v.EventCount += c.n
			top = min(top, c.prio)
		}
		for _, r := range p.rules {
			var n uint64
			for _, c := range r.slots {
				n += c
			}
			// Several pods of a workload: one row per rule, the latest.
			i := slices.IndexFunc(v.Events, func(e SecEventView) bool { return e.Rule == r.latest.Rule })
			ev := r.latest
			ev.Count = n
			if i < 0 {
				v.Events = append(v.Events, ev)
				continue
			}
			n += v.Events[i].Count
			if ev.Time < v.Events[i].Time {
				ev = v.Events[i]
			}
			ev.Count = n
			v.Events[i] = ev
		}
		v.Priority = top.String()
	}
	for _, v := range views {
		slices.SortFunc(v.Events, func(x, y SecEventView) int {
			return cmp.Or(cmp.Compare(y.Time, x.Time), cmp.Compare(x.Rule, y.Rule))
		})
		if len(v.Events) > maxEventsPerWorkload {
			v.Events = v.Events[:maxEventsPerWorkload]
		}
	}
	for id, r := range h.res {
		get(id).Resources = r
	}
	h.views = views
}

// flush returns the views that changed since the last flush, and the ids
// of workloads that have nothing to show any more.
func (h *health) flush(now time.Time, a *Aggregator) (map[string]*WorkloadHealth, []string) {
	h.expire(now)
	if h.guessed && !now.Before(h.retryAt) {
		h.changed = true // the pod's flows may have reached the map since
	}
	if !h.changed {
		return nil, nil
	}
	h.changed, h.guessed = false, false
	h.retryAt = now.Add(time.Second)
	h.compute(a)
	var changed map[string]*WorkloadHealth
	for id, v := range h.views {
		b, _ := json.Marshal(v)
		if h.sent[id] == string(b) {
			continue
		}
		h.sent[id] = string(b)
		if changed == nil {
			changed = map[string]*WorkloadHealth{}
		}
		changed[id] = v
	}
	var removed []string
	for id := range h.sent {
		if _, ok := h.views[id]; !ok {
			delete(h.sent, id)
			removed = append(removed, id)
		}
	}
	slices.Sort(removed)
	return changed, removed
}

// all is every view, for a snapshot.
func (h *health) all() map[string]*WorkloadHealth { return h.views }
