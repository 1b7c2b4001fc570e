package ui

import (
	"fmt"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	respb "github.com/loupe-project/loupe/api/resources/v1"
	secpb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/resources"
)

// hist is a 40-bucket log2 histogram (as the agents send) with counts at
// the given buckets.
func hist(counts map[int]uint64) *respb.Histogram {
	h := &respb.Histogram{Buckets: make([]uint64, 40)}
	for i, c := range counts {
		h.Buckets[i] = c
		h.Count += c
	}
	return h
}

func podRes(ns, pod, workload string, ino uint64, runq, io map[int]uint64, cpu, ooms uint64) *respb.PodResources {
	return &respb.PodResources{Namespace: ns, Pod: pod, Workload: workload, Node: "node-1", NetnsInode: ino,
		CpuNs: cpu, Runqueue: hist(runq), BlockIo: hist(io), OomKills: ooms}
}

// TestHealthResourcesP99: a workload's p99 is the quantile of its pods'
// interval histograms summed (not of one pod, not of the counters since
// start), the first answer is only a baseline, OOM kills add up, and the
// node's own row is no workload.
func TestHealthResourcesP99(t *testing.T) {
	h := newHealth(0)
	t0 := time.Unix(1700000000, 0)
	// Before the interval: a long past of 1 s waits (bucket 29) that the
	// interval must not see.
	first := []*respb.PodResources{
		podRes("shop", "api-1", "api", 11, map[int]uint64{29: 1000}, nil, 5e9, 0),
		podRes("shop", "api-2", "api", 12, map[int]uint64{29: 1000}, nil, 5e9, 1),
		podRes("", "", "", 1, map[int]uint64{29: 50}, nil, 1e9, 0),
	}
	h.setResources(first, t0)
	if len(h.res) != 0 {
		t.Fatalf("the first answer made views: %v", h.res)
	}
	// In the interval: api-1 waits 98 times ~1.5 µs (bucket 10), api-2
	// twice ~1.5 ms (bucket 20); api-2 did 3 I/Os of ~130 µs (bucket 17).
	second := []*respb.PodResources{
		podRes("shop", "api-1", "api", 11, map[int]uint64{29: 1000, 10: 98}, nil, 7e9, 0),
		podRes("shop", "api-2", "api", 12, map[int]uint64{29: 1000, 20: 2}, map[int]uint64{17: 3}, 5.5e9, 2),
		podRes("lab", "b", "", 13, map[int]uint64{10: 1}, nil, 1e9, 0),
		podRes("", "", "", 1, map[int]uint64{29: 60}, nil, 2e9, 0),
	}
	h.setResources(second, t0.Add(10*time.Second))
	api := h.res["shop/api"]
	if api == nil {
		t.Fatalf("no view of shop/api: %v", h.res)
	}
	// 100 waits: rank 99 falls in the second bucket-20 value's half:
	// 2^20 + 2^20 × (99−98)/2 ns.
	want := (1<<20 + (1<<20)/2) / 1e3
	if api.RunqP99Us != roundTo(want, 1) {
		t.Errorf("runq p99 %v µs, want %v (the two pods' interval histograms summed)", api.RunqP99Us, roundTo(want, 1))
	}
	sum := addInto(resources.Sub(second[0].Runqueue, first[0].Runqueue), resources.Sub(second[1].Runqueue, first[1].Runqueue))
	if got := roundTo(resources.Quantile(sum, 0.99)/1e3, 1); got != api.RunqP99Us {
		t.Errorf("runq p99 %v, resources.Quantile of the sum %v", api.RunqP99Us, got)
	}
	if api.IOP99Us < 131 || api.IOP99Us > 262 || api.IOOps != 3 {
		t.Errorf("io p99 %v µs (want in bucket 17, 131–262 µs), ops %d (want 3)", api.IOP99Us, api.IOOps)
	}
	if api.Pods != 2 || api.OOMKills != 2 || api.CPUSeconds != 2.5 || api.Interval != 10000 {
		t.Errorf("view %+v: want 2 pods, 2 OOM kills (cumulative), 2.5 s CPU, 10 s", *api)
	}
	if b := h.res["lab/b"]; b == nil || b.Pods != 1 || b.RunqP99Us != 0 {
		t.Errorf("a pod without a workload, new in this answer: %+v", b)
	}
	if len(h.res) != 2 {
		t.Errorf("views %v: want shop/api and lab/b only (no node row)", h.res)
	}
	// A pod recreated under its name (new netns) starts again: no
	// interval, not a negative one.
	third := []*respb.PodResources{podRes("shop", "api-1", "api", 99, map[int]uint64{5: 1}, nil, 1, 0)}
	h.setResources(third, t0.Add(20*time.Second))
	if api := h.res["shop/api"]; api == nil || api.RunqP99Us != 0 || api.CPUSeconds != 0 {
		t.Errorf("recreated pod: %+v", api)
	}
}

func secEvent(ns, pod, rule, prio string, t time.Time) *secpb.SecurityEvent {
	return &secpb.SecurityEvent{TimeUnixNano: t.UnixNano(), NodeName: "node-1", Rule: rule, Priority: prio,
		Namespace: ns, Pod: pod, Output: "secret output text", Process: &secpb.Process{Name: "cat", Pid: 42, Argv: []string{"cat", "/etc/shadow"}},
		File: "/etc/shadow"}
}

// TestHealthEventsBounded: a workload lists its newest events (at most
// maxEventsPerWorkload), counts them all, shows the most severe priority,
// forgets them past the window, and the pods kept are bounded.
func TestHealthEventsBounded(t *testing.T) {
	h := newHealth(10 * time.Minute)
	a := NewAggregator(AggregatorConfig{})
	now := time.Now()
	for i := range 50 {
		prio := "Notice"
		if i == 3 {
			prio = "CRITICAL"
		}
		h.addEvent(secEvent("x", "a", fmt.Sprintf("rule %d", i), prio, now.Add(time.Duration(i-50)*time.Second)), now)
	}
	h.addEvent(secEvent("x", "a", "too old", "Emergency", now.Add(-11*time.Minute)), now)
	changed, _ := h.flush(now, a)
	v := changed["x/a"]
	if v == nil {
		t.Fatalf("no view for x/a: %v", changed)
	}
	if len(v.Events) != maxEventsPerWorkload || v.EventCount != 50 || v.Priority != "Critical" {
		t.Fatalf("view: %d events, count %d, priority %s; want %d, 50, Critical", len(v.Events), v.EventCount, v.Priority, maxEventsPerWorkload)
	}
	if v.Events[0].Rule != "rule 49" || v.Events[maxEventsPerWorkload-1].Rule != fmt.Sprintf("rule %d", 50-maxEventsPerWorkload) {
		t.Errorf("events not newest first: %s … %s", v.Events[0].Rule, v.Events[9].Rule)
	}
	if e := v.Events[0]; e.Process != "cat" || e.PID != 42 || e.File != "/etc/shadow" || e.Priority != "Notice" {
		t.Errorf("event view %+v", e)
	}
	// Nothing changed: nothing to send.
	if c, r := h.flush(now.Add(time.Millisecond), a); len(c)+len(r) != 0 {
		t.Errorf("second flush sent %v %v", c, r)
	}
	// Past the window the badge goes.
	if _, removed := h.flush(now.Add(11*time.Minute), a); len(removed) != 1 || removed[0] != "x/a" {
		t.Errorf("after the window: removed %v, pods %d", removed, len(h.pods))
	}
	// Many pods: bounded.
	for i := range maxSecurityPods + 500 {
		h.addEvent(secEvent("many", fmt.Sprintf("p%d", i), "r", "Warning", now.Add(time.Duration(i)*time.Millisecond)), now.Add(time.Minute))
	}
	if len(h.pods) != maxSecurityPods {
		t.Errorf("%d pods kept, want %d", len(h.pods), maxSecurityPods)
	}
	if _, ok := h.pods[podRef{"many", "p0"}]; ok {
		t.Error("the quietest pod was kept")
	}
}

// TestHealthResolve: events land on the map node of their pod: its
// Resources workload, else the flows' workload that holds the pod, else
// the pod; the node's own on host.
func TestHealthResolve(t *testing.T) {
	h := newHealth(0)
	a := NewAggregator(AggregatorConfig{})
	fe := pod("demo", "frontend-7d9f-abcde", "frontend", "k8s:app=frontend")
	api := pod("demo", "api-1", "api")
	a.Add(tcpFlow(fe, api, 40000, 8080, flowpb.Verdict_FORWARDED, 0))
	now := time.Now()
	h.setResources([]*respb.PodResources{podRes("shop", "cart-1", "cart", 5, nil, nil, 0, 0)}, now)
	for _, ev := range []*secpb.SecurityEvent{
		secEvent("demo", "frontend-7d9f-abcde", "Read sensitive file", "Warning", now),
		secEvent("shop", "cart-1", "Shell in container", "Notice", now),
		secEvent("lab", "b", "Shell in container", "Notice", now),
		secEvent("", "", "Read sensitive file", "Warning", now),
	} {
		h.addEvent(ev, now)
	}
	changed, _ := h.flush(now, a)
	for _, id := range []string{"demo/frontend", "shop/cart", "lab/b", KindHost} {
		if v := changed[id]; v == nil || v.EventCount != 1 {
			t.Errorf("%s: %+v (all: %v)", id, v, changed)
		}
	}
	if len(changed) != 4 {
		t.Errorf("views %v", changed)
	}
}

// TestHealthEventsByRule: a burst of one rule hides no other: the panel
// lists each rule's latest event with its count, merged over the pods of
// a workload.
func TestHealthEventsByRule(t *testing.T) {
	h := newHealth(0)
	a := NewAggregator(AggregatorConfig{})
	now := time.Now()
	h.setResources([]*respb.PodResources{podRes("demo", "fe-1", "frontend", 1, nil, nil, 0, 0),
		podRes("demo", "fe-2", "frontend", 2, nil, nil, 0, 0)}, now)
	h.addEvent(secEvent("demo", "fe-1", "Kill shadow readers", "Critical", now.Add(-time.Minute)), now)
	for i := range 40 {
		h.addEvent(secEvent("demo", fmt.Sprintf("fe-%d", 1+i%2), "Shell in container", "Notice", now.Add(time.Duration(i)*time.Millisecond-30*time.Second)), now)
	}
	changed, _ := h.flush(now, a)
	v := changed["demo/frontend"]
	if v == nil || len(v.Events) != 2 || v.EventCount != 41 || v.Priority != "Critical" {
		t.Fatalf("view %+v", v)
	}
	if e := v.Events[0]; e.Rule != "Shell in container" || e.Count != 40 || e.Pod != "fe-2" {
		t.Errorf("first row %+v: want the shell rule's latest (fe-2), 40 events", e)
	}
	if e := v.Events[1]; e.Rule != "Kill shadow readers" || e.Count != 1 || e.Priority != "Critical" {
		t.Errorf("second row %+v", e)
	}
}
