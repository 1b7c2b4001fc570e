package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loupe-project/loupe/agent"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/policy"
)

type fixedCounters struct {
	counters []datapath.Counter
	stats    datapath.EventStats
	err      error
}

func (f fixedCounters) Counters() ([]datapath.Counter, error)    { return f.counters, f.err }
func (f fixedCounters) EventStats() (datapath.EventStats, error) { return f.stats, f.err }

func TestDatapathCollector(t *testing.T) {
	src := fixedCounters{
		counters: []datapath.Counter{
			{Reason: contract.VerdictForwarded, Direction: contract.DirectionEgress, EndpointID: 3, RuleID: 0, Packets: 10, Bytes: 1000},
			{Reason: contract.VerdictForwarded, Direction: contract.DirectionEgress, EndpointID: 3, RuleID: 7, Packets: 5, Bytes: 500},
			{Reason: contract.DropInvalidSourceIP, Direction: contract.DirectionEgress, EndpointID: 3, Packets: 1, Bytes: 60},
		},
		stats: datapath.EventStats{Read: 4, Lost: 2, DropEventsLimited: 1},
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(newDatapathCollector(src, slog.New(slog.DiscardHandler)))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var lv []string
			for _, l := range m.GetLabel() {
				lv = append(lv, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()+"{"+strings.Join(lv, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	want := map[string]float64{
		// Entries that differ only in rule id are summed.
		"loupe_datapath_packets_total{direction=egress,endpoint=3,reason=FORWARDED}":         15,
		"loupe_datapath_bytes_total{direction=egress,endpoint=3,reason=FORWARDED}":           1500,
		"loupe_datapath_packets_total{direction=egress,endpoint=3,reason=INVALID_SOURCE_IP}": 1,
		"loupe_datapath_bytes_total{direction=egress,endpoint=3,reason=INVALID_SOURCE_IP}":   60,
		"loupe_datapath_events_total{outcome=read}":                                          4,
		"loupe_datapath_events_total{outcome=short}":                                         0,
		"loupe_datapath_events_total{outcome=lost}":                                          2,
		"loupe_datapath_events_total{outcome=rate_limited}":                                  1,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("metrics\n%v\nwant\n%v", got, want)
	}

	bad := prometheus.NewRegistry()
	bad.MustRegister(newDatapathCollector(fixedCounters{err: errors.New("map gone")}, slog.New(slog.DiscardHandler)))
	if _, err := bad.Gather(); err == nil {
		t.Fatal("a failing map read was not reported")
	}
}

// One /metrics serves Hubble's flow metrics and the datapath counters.
func TestMetricsHandlerServesObserverAndDatapath(t *testing.T) {
	obs, err := observer.New(observer.Config{NodeName: "n1", Metadata: &metadata.Static{Snap: &metadata.Snapshot{}},
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	dpReg := prometheus.NewRegistry()
	dpReg.MustRegister(newDatapathCollector(fixedCounters{stats: datapath.EventStats{Lost: 3}}, slog.New(slog.DiscardHandler)))
	main, dpOnly := metricsHandlers(dpReg, obs)
	if dpOnly != nil {
		t.Errorf("a separate /metrics/datapath handler is not needed when the observer exposes its registry")
	}
	obs.HandleEvent([]byte{1, 2, 3}) // a short record: one decode error
	rec := httptest.NewRecorder()
	main.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{"loupe_datapath_events_total{outcome=\"lost\"} 3", "loupe_decode_errors_total 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q:\n%s", want, body)
		}
	}
}

type fixedInvalid []policy.InvalidPolicy

func (f fixedInvalid) InvalidPolicies() []policy.InvalidPolicy { return f }

func TestInvalidPolicyCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newInvalidPolicyCollector(fixedInvalid{
		{Ref: policy.Ref{Namespace: "x", Name: "bad"}, Err: errors.New("spec.ingress[0].ports[0].protocol")},
		{Ref: policy.Ref{Namespace: "y", Name: "worse"}, Err: errors.New("spec.podSelector")},
	}))
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 2 || mfs[0].GetName() != "loupe_policy_invalid" || mfs[1].GetMetric()[0].GetGauge().GetValue() != 2 {
		t.Fatalf("gather: %v %v", mfs, err)
	}
	var got []string
	for _, m := range mfs[0].GetMetric() {
		l := m.GetLabel()
		got = append(got, l[1].GetValue()+"/"+l[0].GetValue()+"="+fmt.Sprint(m.GetGauge().GetValue()))
	}
	if strings.Join(got, " ") != "x/bad=1 y/worse=1" {
		t.Errorf("series: %v", got)
	}
	// None: the count says 0.
	reg = prometheus.NewRegistry()
	reg.MustRegister(newInvalidPolicyCollector(fixedInvalid(nil)))
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 1 || mfs[0].GetName() != "loupe_policy_invalid_count" || mfs[0].GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Errorf("no invalid policy: %v %v", mfs, err)
	}
}

func TestStateRecoveryMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newStateRecoveryMetric([]agent.StateRecovery{{File: agent.EndpointsStateFile, MovedTo: "x"}}))
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`loupe_agent_state_file_recoveries_total{file="endpoints.json"} 1`,
		`loupe_agent_state_file_recoveries_total{file="ipam.json"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("missing %q in\n%s", want, body)
		}
	}
}

type fixedPolicyMap struct {
	entries, capacity int
	err               error
}

func (f fixedPolicyMap) PolicyMapUse() (int, int, error) { return f.entries, f.capacity, f.err }

func TestPolicyMapCollector(t *testing.T) {
	var refused *policy.CapacityError
	gather := func(src policyMapSource) map[string]float64 {
		reg := prometheus.NewRegistry()
		reg.MustRegister(newPolicyMapCollector(src, func() *policy.CapacityError { return refused }))
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
		}
		return got
	}
	got := gather(fixedPolicyMap{entries: 12, capacity: 65536})
	if got["loupe_policy_map_entries"] != 12 || got["loupe_policy_map_capacity"] != 65536 ||
		got["loupe_policy_map_memory_bytes"] != 12*datapath.PolicyEntryBytes ||
		got["loupe_policy_refused"] != 0 || got["loupe_policy_refused_entries"] != 0 || len(got) != 5 {
		t.Fatalf("got %v", got)
	}
	refused = &policy.CapacityError{Entries: 900000, Capacity: 786432}
	if got := gather(fixedPolicyMap{entries: 12, capacity: 65536}); got["loupe_policy_refused"] != 1 || got["loupe_policy_refused_entries"] != 900000 {
		t.Fatalf("refused: got %v", got)
	}
	// A map that cannot be read is a scrape error, not a 0.
	reg := prometheus.NewRegistry()
	reg.MustRegister(newPolicyMapCollector(fixedPolicyMap{err: errors.New("boom")}, func() *policy.CapacityError { return nil }))
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("gather: %v", err)
	}
}
