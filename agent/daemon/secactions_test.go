package daemon

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-project/loupe/otlp"
	"github.com/loupe-project/loupe/secevents"
)

// loupe_security_events_total counts by rule and priority, and the OTLP
// metrics export (which sends what the agent's registry gathers) carries
// it as a monotonic sum with the same attributes. The live lab test
// (TestPrivilegedLabSecurityKill) reads the same series from /metrics.
func TestSecurityEventsMetric(t *testing.T) {
	rs, err := secevents.Compile([]secevents.Source{secevents.DefaultRules()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var read *secevents.Rule
	for _, r := range rs.List() {
		if r.Name == "Read sensitive file" {
			read = r
		}
	}
	a := newSecActions()
	reg := prometheus.NewRegistry()
	reg.MustRegister(a.events)
	a.count(read)
	a.count(read)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ms := otlp.Metrics(mfs, time.Unix(1, 0), time.Unix(2, 0))
	if len(ms) != 1 || ms[0].GetName() != "loupe_security_events_total" {
		t.Fatalf("otlp metrics %v", ms)
	}
	sum := ms[0].GetSum()
	if sum == nil || !sum.GetIsMonotonic() || len(sum.GetDataPoints()) != 1 {
		t.Fatalf("not one monotonic sum point: %v", ms[0])
	}
	p := sum.GetDataPoints()[0]
	attrs := map[string]string{}
	for _, kv := range p.GetAttributes() {
		attrs[kv.GetKey()] = kv.GetValue().GetStringValue()
	}
	if p.GetAsDouble() != 2 || attrs["rule"] != "Read sensitive file" || attrs["priority"] != "Warning" || len(attrs) != 2 {
		t.Errorf("point %v, attrs %v", p, attrs)
	}
}
