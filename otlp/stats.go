package otlp

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a flow is dropped (label reason of loupe_otlp_flows_dropped_total).
const (
	ReasonQueueFull        = "queue_full"        // the export queue was full
	ReasonRetriesExhausted = "retries_exhausted" // retried for --otlp-retry-max-elapsed
	ReasonRejected         = "rejected"          // the collector refused it for good
	ReasonShutdown         = "shutdown"          // still unsent when the program stopped
	ReasonEdgeLimit        = "edge_limit"        // aggregated: --otlp-max-edges reached
	ReasonUpstreamLost     = "upstream_lost"     // relay: its follow queue overflowed
)

var reasons = []string{ReasonQueueFull, ReasonRetriesExhausted, ReasonRejected, ReasonShutdown, ReasonEdgeLimit, ReasonUpstreamLost}

// dropLogInterval is how often dropped flows are logged, as one line.
const dropLogInterval = 10 * time.Second

// Stats are an exporter's flow counts. Received = Exported + Dropped +
// what is still queued or being sent.
type Stats struct {
	Received, Exported, Dropped uint64
	DroppedBy                   map[string]uint64
}

type stats struct {
	received  atomic.Uint64
	exported  atomic.Uint64
	dropped   [6]atomic.Uint64 // by index in reasons
	retries   prometheus.Counter
	metricsOK prometheus.Counter
	metricsKO prometheus.Counter

	mu  sync.Mutex
	err error // last export error, for the drop log
}

func newStats() *stats {
	return &stats{
		retries: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "loupe", Subsystem: "otlp", Name: "export_retries_total",
			Help: "OTLP log export attempts retried after a retryable error"}),
		metricsOK: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "loupe", Subsystem: "otlp", Name: "metric_exports_total",
			Help: "OTLP metric exports the collector accepted"}),
		metricsKO: prometheus.NewCounter(prometheus.CounterOpts{Namespace: "loupe", Subsystem: "otlp", Name: "metric_exports_failed_total",
			Help: "OTLP metric exports that failed; the next interval sends the cumulative values again"}),
	}
}

func (s *stats) drop(reason string, n uint64) {
	for i, r := range reasons {
		if r == reason {
			s.dropped[i].Add(n)
			return
		}
	}
}

func (s *stats) lastErr(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *stats) snapshot() Stats {
	out := Stats{Received: s.received.Load(), Exported: s.exported.Load(), DroppedBy: map[string]uint64{}}
	for i, r := range reasons {
		n := s.dropped[i].Load()
		out.DroppedBy[r] = n
		out.Dropped += n
	}
	return out
}

// collectors read the atomics at scrape time, so counting costs the hot
// path one atomic add.
func (s *stats) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "loupe", Subsystem: "otlp", Name: "flows_received_total",
			Help: "Flows handed to the OTLP exporter"}, func() float64 { return float64(s.received.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "loupe", Subsystem: "otlp", Name: "flows_exported_total",
			Help: "Flows the collector acknowledged (aggregated records count the flows they stand for)"}, func() float64 { return float64(s.exported.Load()) }),
		droppedCollector{s},
		s.retries, s.metricsOK, s.metricsKO,
	}
}

var droppedDesc = prometheus.NewDesc("loupe_otlp_flows_dropped_total",
	"Flows that never reached the collector, by reason", []string{"reason"}, nil)

type droppedCollector struct{ s *stats }

func (c droppedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- droppedDesc }

func (c droppedCollector) Collect(ch chan<- prometheus.Metric) {
	for i, r := range reasons {
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(c.s.dropped[i].Load()), r)
	}
}

// logDrops logs, at most every dropLogInterval, how many flows were
// dropped since the last line, so an outage shows in the logs once, not
// once per flow.
func (s *stats) logDrops(stop <-chan struct{}, log *slog.Logger) {
	t := time.NewTicker(dropLogInterval)
	defer t.Stop()
	last := s.snapshot()
	report := func() {
		cur := s.snapshot()
		if cur.Dropped == last.Dropped {
			return
		}
		args := []any{"dropped", cur.Dropped - last.Dropped, "dropped_total", cur.Dropped}
		for _, r := range reasons {
			if d := cur.DroppedBy[r] - last.DroppedBy[r]; d > 0 {
				args = append(args, r, d)
			}
		}
		s.mu.Lock()
		if s.err != nil {
			args = append(args, "last_error", s.err.Error())
		}
		s.mu.Unlock()
		log.Warn("otlp: flows dropped", args...)
		last = cur
	}
	for {
		select {
		case <-t.C:
			report()
		case <-stop:
			report()
			return
		}
	}
}
