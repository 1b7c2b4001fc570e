package otlp

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/loupe-project/loupe/otlp/otlptest"
)

// Every family of the registry reaches the collector under its /metrics
// name with its labels and value: counters as cumulative monotonic sums,
// gauges as gauges, histograms with their buckets.
func TestMetricsExport(t *testing.T) {
	r := otlptest.Start(t, "127.0.0.1:0", nil)
	cfg := testConfig(r)
	cfg.MetricsInterval = 100 * time.Millisecond
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	drops := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "hubble_drop_total", Help: "drops"}, []string{"reason", "protocol"})
	drops.WithLabelValues("POLICY_DENIED", "TCP").Add(7)
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "loupe_policy_invalid_count", Help: "invalid"})
	g.Set(2)
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "loupe_test_seconds", Help: "h", Buckets: []float64{0.1, 1}})
	for _, v := range []float64{0.05, 0.5, 0.5, 5} {
		h.Observe(v)
	}
	reg.MustRegister(drops, g, h)
	reg.MustRegister(e.Collectors()...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx, reg) }()
	defer func() { cancel(); <-done }()

	otlptest.WaitFor(t, 10*time.Second, "a metrics export", func() bool { return len(r.Metrics()) > 0 })
	byName := map[string]pmetric.Metric{}
	ms := r.Metrics()[0]
	for i := range ms.ResourceMetrics().Len() {
		sms := ms.ResourceMetrics().At(i).ScopeMetrics()
		for j := range sms.Len() {
			for k := range sms.At(j).Metrics().Len() {
				m := sms.At(j).Metrics().At(k)
				byName[m.Name()] = m
			}
		}
	}
	c, ok := byName["hubble_drop_total"]
	if !ok || c.Type() != pmetric.MetricTypeSum || !c.Sum().IsMonotonic() ||
		c.Sum().AggregationTemporality() != pmetric.AggregationTemporalityCumulative {
		t.Fatalf("hubble_drop_total: %v", c)
	}
	dp := c.Sum().DataPoints().At(0)
	if reason, _ := dp.Attributes().Get("reason"); dp.DoubleValue() != 7 || reason.Str() != "POLICY_DENIED" {
		t.Errorf("hubble_drop_total point %v %v", dp.DoubleValue(), dp.Attributes().AsRaw())
	}
	if m := byName["loupe_policy_invalid_count"]; m.Type() != pmetric.MetricTypeGauge || m.Gauge().DataPoints().At(0).DoubleValue() != 2 {
		t.Errorf("gauge: %v", m.Type())
	}
	hm := byName["loupe_test_seconds"]
	if hm.Type() != pmetric.MetricTypeHistogram {
		t.Fatalf("histogram type %v", hm.Type())
	}
	hp := hm.Histogram().DataPoints().At(0)
	if hp.Count() != 4 || hp.Sum() != 6.05 || hp.ExplicitBounds().Len() != 2 ||
		hp.BucketCounts().Len() != 3 || hp.BucketCounts().At(0) != 1 || hp.BucketCounts().At(1) != 2 || hp.BucketCounts().At(2) != 1 {
		t.Errorf("histogram %d %v %v %v", hp.Count(), hp.Sum(), hp.ExplicitBounds().AsRaw(), hp.BucketCounts().AsRaw())
	}
	if _, ok := byName["loupe_otlp_flows_dropped_total"]; !ok {
		t.Error("the exporter's own drop counter is not exported")
	}
}
