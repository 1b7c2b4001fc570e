package observer

import (
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/observer/conndelta"
)

// Connection metrics per edge. An edge is (client namespace, client
// workload) -> (server namespace, server workload): workload names, not
// pods, so the series stay bounded by the deployments, not by pod churn.
// A side that is no pod is named by its reserved identity
// ("reserved:world") with an empty namespace. Flows carry a connection's
// running totals; the metrics count their growth, which needs the last
// totals of each connection (connState).
var connLabels = []string{"source_namespace", "source_workload", "destination_namespace", "destination_workload"}

// HandshakeBuckets are the handshake histogram's bounds, in seconds: from
// a same-node connect (tens of µs) to a SYN retransmitted twice (3 s).
var HandshakeBuckets = []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1, 3}

type connMetrics struct {
	bytes, packets *prometheus.CounterVec // label "direction": sent (client to server) or received
	conns          *prometheus.CounterVec
	handshake      *prometheus.HistogramVec
	untracked      prometheus.Counter

	tracker *conndelta.Tracker
}

func newConnMetrics(reg prometheus.Registerer) *connMetrics {
	dirLabels := append(slices.Clone(connLabels), "direction")
	m := &connMetrics{
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Name: "connection_bytes_total",
			Help: "Bytes of connections between workloads, counted once per connection; direction sent is client to server, received server to client",
		}, dirLabels),
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Name: "connection_packets_total",
			Help: "Packets of connections between workloads, counted once per connection; direction sent is client to server, received server to client",
		}, dirLabels),
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Name: "connections_total",
			Help: "Connections between workloads, counted once, at the client pod's veth (the server's when the client is no pod)",
		}, connLabels),
		handshake: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "loupe", Name: "connection_handshake_seconds",
			Help:    "TCP handshake time between workloads, measured in the datapath (client's veth: SYN to SYN-ACK)",
			Buckets: HandshakeBuckets,
		}, connLabels),
		untracked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "connection_metrics_untracked_total",
			Help: "Connection flows left out of the connection metrics because the per-connection state was full",
		}),
		tracker: conndelta.New(),
	}
	reg.MustRegister(m.bytes, m.packets, m.conns, m.handshake, m.untracked)
	return m
}

// edgeName is one side of an edge for the metrics and the map: namespace
// and workload, or "" and the reserved identity label.
func edgeName(ep *flowpb.Endpoint) (ns, workload string) {
	if w := ep.GetWorkloads(); len(w) > 0 && w[0].GetName() != "" {
		return ep.GetNamespace(), w[0].GetName()
	}
	if ep.GetPodName() != "" {
		return ep.GetNamespace(), ep.GetPodName()
	}
	for _, l := range ep.GetLabels() {
		if strings.HasPrefix(l, contract.ReservedLabelPrefix) {
			return "", l
		}
	}
	return "", "unknown"
}

// observe counts the growth of a connection flow's totals, which the
// decoder hands over with the flow.
func (m *connMetrics) observe(f *flowpb.Flow, tot conndelta.Totals) {
	d, ok := m.tracker.AddTotals(f, tot)
	if !ok {
		m.untracked.Inc()
		return
	}
	cns, cw := edgeName(d.Client)
	sns, sw := edgeName(d.Server)
	if d.New {
		m.conns.WithLabelValues(cns, cw, sns, sw).Inc()
	}
	add := func(v *prometheus.CounterVec, dir string, n uint64) {
		if n > 0 {
			v.WithLabelValues(cns, cw, sns, sw, dir).Add(float64(n))
		}
	}
	add(m.bytes, "sent", d.BytesSent)
	add(m.bytes, "received", d.BytesReceived)
	add(m.packets, "sent", d.PacketsSent)
	add(m.packets, "received", d.PacketsReceived)
	if d.Handshake > 0 {
		m.handshake.WithLabelValues(cns, cw, sns, sw).Observe(d.Handshake.Seconds())
	}
}
