package daemon

import (
	"log/slog"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/loupe-project/loupe/agent"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/policy"
)

// datapathSource is what the collector reads: *datapath.Datapath.
type datapathSource interface {
	Counters() ([]datapath.Counter, error)
	EventStats() (datapath.EventStats, error)
}

// datapathCollector exports the datapath's per-CPU counters and its event
// stream statistics, read from the maps at scrape time, so the numbers are
// exact whatever the event rate limit dropped.
type datapathCollector struct {
	dp  datapathSource
	log *slog.Logger

	packets, bytes, events *prometheus.Desc
}

func newDatapathCollector(dp datapathSource, log *slog.Logger) *datapathCollector {
	labels := []string{"reason", "direction", "endpoint"}
	return &datapathCollector{
		dp: dp, log: log,
		packets: prometheus.NewDesc("loupe_datapath_packets_total",
			"Packets seen by the datapath on host veths, by verdict or drop reason, direction and endpoint id", labels, nil),
		bytes: prometheus.NewDesc("loupe_datapath_bytes_total",
			"Bytes seen by the datapath on host veths, by verdict or drop reason, direction and endpoint id", labels, nil),
		events: prometheus.NewDesc("loupe_datapath_events_total",
			"Datapath ring-buffer events: read by the agent, short (skipped), lost (ring full), rate_limited (drop events held back)",
			[]string{"outcome"}, nil),
	}
}

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.packets
	ch <- c.bytes
	ch <- c.events
}

type counterKey struct {
	reason, direction uint8
	endpoint          uint32
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	counters, err := c.dp.Counters()
	if err != nil {
		c.log.Warn("metrics: read datapath counters", "err", err)
		ch <- prometheus.NewInvalidMetric(c.packets, err)
	} else {
		// Entries differing only in policy rule id are summed.
		sum := map[counterKey][2]uint64{}
		for _, ct := range counters {
			k := counterKey{ct.Reason, ct.Direction, ct.EndpointID}
			v := sum[k]
			sum[k] = [2]uint64{v[0] + ct.Packets, v[1] + ct.Bytes}
		}
		for k, v := range sum {
			lv := []string{reasonName(k.reason), directionName(k.direction), strconv.FormatUint(uint64(k.endpoint), 10)}
			ch <- prometheus.MustNewConstMetric(c.packets, prometheus.CounterValue, float64(v[0]), lv...)
			ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.CounterValue, float64(v[1]), lv...)
		}
	}
	st, err := c.dp.EventStats()
	if err != nil {
		c.log.Warn("metrics: read event stats", "err", err)
		ch <- prometheus.NewInvalidMetric(c.events, err)
		return
	}
	for outcome, v := range map[string]uint64{"read": st.Read, "short": st.Short, "lost": st.Lost, "rate_limited": st.DropEventsLimited} {
		ch <- prometheus.MustNewConstMetric(c.events, prometheus.CounterValue, float64(v), outcome)
	}
}

// reasonName uses Hubble's names for verdicts and drop reasons.
func reasonName(r uint8) string {
	switch r {
	case datapath.ReasonNoEndpoint:
		return "NO_ENDPOINT"
	case contract.VerdictForwarded:
		return "FORWARDED"
	case contract.DropInvalidSourceIP:
		return "INVALID_SOURCE_IP"
	case contract.DropPolicyDenied:
		return "POLICY_DENIED"
	case contract.DropInvalidPacket:
		return "INVALID_PACKET_DROPPED"
	}
	return strconv.Itoa(int(r))
}

func directionName(d uint8) string {
	switch d {
	case contract.DirectionIngress:
		return "ingress"
	case contract.DirectionEgress:
		return "egress"
	}
	return strconv.Itoa(int(d))
}

// gathererObserver is an observer that exposes its metrics registry, so
// one /metrics can serve both its and the datapath's metrics.
type gathererObserver interface {
	Gatherer() prometheus.Gatherer
}

// metricsHandlers returns the handler for /metrics and, when the observer
// only offers an http.Handler, a second one for /metrics/datapath.
func metricsHandlers(dpReg *prometheus.Registry, obs Observer) (main, datapathOnly http.Handler) {
	dpHandler := promhttp.HandlerFor(dpReg, promhttp.HandlerOpts{})
	if obs == nil {
		return dpHandler, nil
	}
	if g, ok := obs.(gathererObserver); ok {
		return promhttp.HandlerFor(prometheus.Gatherers{g.Gatherer(), dpReg}, promhttp.HandlerOpts{}), nil
	}
	return obs.MetricsHandler(), dpHandler
}

// invalidPolicySource is what the invalid-policy collector reads:
// *policy.Engine.
type invalidPolicySource interface {
	InvalidPolicies() []policy.InvalidPolicy
}

// invalidPolicyCollector exports one series per NetworkPolicy the API
// server would refuse (only a folder source can hold one), so an alert
// can name it: the engine enforces it fail-closed, not as written.
// The count is always exported, so "no invalid policy" is a 0, not an
// absent series.
type invalidPolicyCollector struct {
	src         invalidPolicySource
	desc, count *prometheus.Desc
}

func newInvalidPolicyCollector(src invalidPolicySource) *invalidPolicyCollector {
	return &invalidPolicyCollector{src: src, desc: prometheus.NewDesc("loupe_policy_invalid",
		"1 for each NetworkPolicy of the applied snapshot that fails validation; it is enforced fail-closed (isolates the pods it selects, allows nothing)",
		[]string{"namespace", "name"}, nil),
		count: prometheus.NewDesc("loupe_policy_invalid_count",
			"Number of NetworkPolicies of the applied snapshot that fail validation (see loupe_policy_invalid)", nil, nil)}
}

func (c *invalidPolicyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.count }

func (c *invalidPolicyCollector) Collect(ch chan<- prometheus.Metric) {
	inv := c.src.InvalidPolicies()
	for _, p := range inv {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1, p.Ref.Namespace, p.Ref.Name)
	}
	ch <- prometheus.MustNewConstMetric(c.count, prometheus.GaugeValue, float64(len(inv)))
}

// newStateRecoveryMetric counts the state files this agent found corrupt at
// start and rebuilt (agent/recover.go). Both files are always exported, at
// 0 when intact, so an alert can fire on any non-zero value.
func newStateRecoveryMetric(recs []agent.StateRecovery) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "loupe_agent_state_file_recoveries_total",
		Help: "State files found corrupt at start, moved aside as <file>.corrupt-<time> and rebuilt from the pinned endpoint map and the host veths",
	}, []string{"file"})
	c.WithLabelValues(agent.IPAMStateFile)
	c.WithLabelValues(agent.EndpointsStateFile)
	for _, r := range recs {
		c.WithLabelValues(r.File).Inc()
	}
	return c
}

// policyMapSource is what the policy map collector reads: *datapath.Datapath.
type policyMapSource interface {
	PolicyMapUse() (entries, capacity int, err error)
}

// policyMapCollector exports the policy map's use, counted at scrape
// time, so an alert can fire before a full map refuses new policy, its
// kernel memory, and whether the last policy set was refused for size.
type policyMapCollector struct {
	src                                 policyMapSource
	refused                             func() *policy.CapacityError
	entries, capacity, memory, refusedD *prometheus.Desc
	needed                              *prometheus.Desc
}

func newPolicyMapCollector(src policyMapSource, refused func() *policy.CapacityError) *policyMapCollector {
	return &policyMapCollector{src: src, refused: refused,
		entries:  prometheus.NewDesc("loupe_policy_map_entries", "Entries in the datapath's policy map (an LPM trie of identity, protocol and port blocks)", nil, nil),
		capacity: prometheus.NewDesc("loupe_policy_map_capacity", "Entries the datapath's policy map can hold", nil, nil),
		memory: prometheus.NewDesc("loupe_policy_map_memory_bytes",
			"Kernel memory of the policy map's entries, an upper bound: entries times the 144 bytes an entry costs at most (trie node and branching node, as measured in a memory cgroup)", nil, nil),
		refusedD: prometheus.NewDesc("loupe_policy_refused",
			"1 while the latest policy set is refused because it needs more policy map entries than the map holds (the node keeps the last policy that fit)", nil, nil),
		needed: prometheus.NewDesc("loupe_policy_refused_entries",
			"Policy map entries the refused policy set needs; 0 when the latest set fit", nil, nil)}
}

func (c *policyMapCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.entries
	ch <- c.capacity
	ch <- c.memory
	ch <- c.refusedD
	ch <- c.needed
}

func (c *policyMapCollector) Collect(ch chan<- prometheus.Metric) {
	refused, needed := 0.0, 0.0
	if r := c.refused(); r != nil {
		refused, needed = 1, float64(r.Entries)
	}
	ch <- prometheus.MustNewConstMetric(c.refusedD, prometheus.GaugeValue, refused)
	ch <- prometheus.MustNewConstMetric(c.needed, prometheus.GaugeValue, needed)
	n, capacity, err := c.src.PolicyMapUse()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.entries, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(n))
	ch <- prometheus.MustNewConstMetric(c.capacity, prometheus.GaugeValue, float64(capacity))
	ch <- prometheus.MustNewConstMetric(c.memory, prometheus.GaugeValue, float64(n)*datapath.PolicyEntryBytes)
}
