package otlp

import (
	"context"
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// exportMetricsEvery sends the registry every MetricsInterval, and once
// more at shutdown. Values are cumulative, so a failed export loses no
// count: the next one carries it.
func (e *Exporter) exportMetricsEvery(ctx, sendCtx context.Context, g prometheus.Gatherer) {
	t := time.NewTicker(e.cfg.MetricsInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			e.exportMetrics(ctx, g)
		case <-ctx.Done():
			e.exportMetrics(sendCtx, g)
			return
		}
	}
}

func (e *Exporter) exportMetrics(ctx context.Context, g prometheus.Gatherer) {
	mfs, err := g.Gather()
	if err != nil && len(mfs) == 0 {
		e.cfg.Log.Warn("otlp: gather metrics", "err", err)
		return
	}
	req := &colmetricspb.ExportMetricsServiceRequest{ResourceMetrics: []*metricspb.ResourceMetrics{{
		Resource: e.resource,
		ScopeMetrics: []*metricspb.ScopeMetrics{{
			Scope:   e.scope,
			Metrics: Metrics(mfs, e.start, time.Now()),
		}},
	}}}
	// One attempt per interval: the next interval is the retry.
	cctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	if e.md != nil {
		cctx = withMD(cctx, e.md)
	}
	if _, err := e.metrics.Export(cctx, req); err != nil {
		e.stats.metricsKO.Inc()
		e.stats.lastErr(err)
		return
	}
	e.stats.metricsOK.Inc()
}

// Metrics converts Prometheus metric families to OTLP metrics with the
// same names (the /metrics names, so queries carry over): counters become
// monotonic cumulative sums, gauges and untyped gauges, histograms
// explicit-bucket histograms and summaries summaries. Labels become
// attributes. start is the start of the cumulative series.
func Metrics(mfs []*dto.MetricFamily, start, now time.Time) []*metricspb.Metric {
	st, ts := uint64(start.UnixNano()), uint64(now.UnixNano())
	out := make([]*metricspb.Metric, 0, len(mfs))
	for _, mf := range mfs {
		m := &metricspb.Metric{Name: mf.GetName(), Description: mf.GetHelp()}
		switch mf.GetType() {
		case dto.MetricType_COUNTER:
			dps := make([]*metricspb.NumberDataPoint, 0, len(mf.GetMetric()))
			for _, pm := range mf.GetMetric() {
				dps = append(dps, numberPoint(pm, st, ts, pm.GetCounter().GetValue()))
			}
			m.Data = &metricspb.Metric_Sum{Sum: &metricspb.Sum{DataPoints: dps, IsMonotonic: true,
				AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE}}
		case dto.MetricType_GAUGE, dto.MetricType_UNTYPED:
			dps := make([]*metricspb.NumberDataPoint, 0, len(mf.GetMetric()))
			for _, pm := range mf.GetMetric() {
				v := pm.GetGauge().GetValue()
				if mf.GetType() == dto.MetricType_UNTYPED {
					v = pm.GetUntyped().GetValue()
				}
				p := numberPoint(pm, 0, ts, v)
				dps = append(dps, p)
			}
			m.Data = &metricspb.Metric_Gauge{Gauge: &metricspb.Gauge{DataPoints: dps}}
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			dps := make([]*metricspb.HistogramDataPoint, 0, len(mf.GetMetric()))
			for _, pm := range mf.GetMetric() {
				dps = append(dps, histogramPoint(pm, st, ts))
			}
			m.Data = &metricspb.Metric_Histogram{Histogram: &metricspb.Histogram{DataPoints: dps,
				AggregationTemporality: metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE}}
		case dto.MetricType_SUMMARY:
			dps := make([]*metricspb.SummaryDataPoint, 0, len(mf.GetMetric()))
			for _, pm := range mf.GetMetric() {
				s := pm.GetSummary()
				p := &metricspb.SummaryDataPoint{Attributes: labels(pm), StartTimeUnixNano: st, TimeUnixNano: ts,
					Count: s.GetSampleCount(), Sum: s.GetSampleSum()}
				for _, q := range s.GetQuantile() {
					p.QuantileValues = append(p.QuantileValues, &metricspb.SummaryDataPoint_ValueAtQuantile{Quantile: q.GetQuantile(), Value: q.GetValue()})
				}
				dps = append(dps, p)
			}
			m.Data = &metricspb.Metric_Summary{Summary: &metricspb.Summary{DataPoints: dps}}
		default:
			continue
		}
		out = append(out, m)
	}
	return out
}

func labels(pm *dto.Metric) []*commonpb.KeyValue {
	kv := make([]*commonpb.KeyValue, 0, len(pm.GetLabel()))
	for _, l := range pm.GetLabel() {
		kv = append(kv, str(l.GetName(), l.GetValue()))
	}
	return kv
}

func numberPoint(pm *dto.Metric, st, ts uint64, v float64) *metricspb.NumberDataPoint {
	return &metricspb.NumberDataPoint{Attributes: labels(pm), StartTimeUnixNano: st, TimeUnixNano: ts,
		Value: &metricspb.NumberDataPoint_AsDouble{AsDouble: v}}
}

// histogramPoint turns Prometheus's cumulative buckets (ending in +Inf,
// implicit or not) into OTLP's per-bucket counts.
func histogramPoint(pm *dto.Metric, st, ts uint64) *metricspb.HistogramDataPoint {
	h := pm.GetHistogram()
	sum := h.GetSampleSum()
	p := &metricspb.HistogramDataPoint{Attributes: labels(pm), StartTimeUnixNano: st, TimeUnixNano: ts,
		Count: h.GetSampleCount(), Sum: &sum}
	var prev uint64
	for _, b := range h.GetBucket() {
		if math.IsInf(b.GetUpperBound(), +1) {
			continue
		}
		p.ExplicitBounds = append(p.ExplicitBounds, b.GetUpperBound())
		p.BucketCounts = append(p.BucketCounts, b.GetCumulativeCount()-prev)
		prev = b.GetCumulativeCount()
	}
	p.BucketCounts = append(p.BucketCounts, h.GetSampleCount()-prev)
	return p
}
