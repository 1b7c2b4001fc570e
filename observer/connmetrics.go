package observer

import (
	"net/netip"
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
	// edges caches each edge's series by its endpoints (the decoder
	// shares one immutable Endpoint between a pod's flows): resolving up
	// to six label sets per flow was most of these metrics' cost.
	edges map[[2]*flowpb.Endpoint]*edgeSeries
}

// edgeSeries are one edge's series, each resolved when first counted, so
// that a series appears only once it has a value, as before the cache.
type edgeSeries struct {
	labels    []string // client namespace, workload, server namespace, workload
	conns     prometheus.Counter
	bytes     [2]prometheus.Counter // sent, received
	packets   [2]prometheus.Counter
	handshake prometheus.Observer
}

var connDirections = [2]string{"sent", "received"}

// maxEdgeSeries bounds the cache; it starts over when full.
const maxEdgeSeries = 4096

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
		edges:   make(map[[2]*flowpb.Endpoint]*edgeSeries),
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
// decoder hands over with the flow and its IP source and destination
// (zero without an IP layer).
func (m *connMetrics) observe(f *flowpb.Flow, tot conndelta.Totals, src, dst netip.Addr) {
	d, ok := m.tracker.AddTotalsAt(f, tot, src, dst)
	if !ok {
		m.untracked.Inc()
		return
	}
	e := m.edge(d.Client, d.Server)
	if d.New {
		if e.conns == nil {
			e.conns = m.conns.WithLabelValues(e.labels...)
		}
		e.conns.Inc()
	}
	add := func(v *prometheus.CounterVec, c *[2]prometheus.Counter, dir int, n uint64) {
		if n == 0 {
			return
		}
		if c[dir] == nil {
			c[dir] = v.WithLabelValues(append(e.labels[:4:4], connDirections[dir])...)
		}
		c[dir].Add(float64(n))
	}
	add(m.bytes, &e.bytes, 0, d.BytesSent)
	add(m.bytes, &e.bytes, 1, d.BytesReceived)
	add(m.packets, &e.packets, 0, d.PacketsSent)
	add(m.packets, &e.packets, 1, d.PacketsReceived)
	if d.Handshake > 0 {
		if e.handshake == nil {
			e.handshake = m.handshake.WithLabelValues(e.labels...)
		}
		e.handshake.Observe(d.Handshake.Seconds())
	}
}

// edge returns the cached series of the edge from client to server.
func (m *connMetrics) edge(client, server *flowpb.Endpoint) *edgeSeries {
	k := [2]*flowpb.Endpoint{client, server}
	if e := m.edges[k]; e != nil {
		return e
	}
	cns, cw := edgeName(client)
	sns, sw := edgeName(server)
	e := &edgeSeries{labels: []string{cns, cw, sns, sw}}
	if len(m.edges) >= maxEdgeSeries {
		clear(m.edges)
	}
	m.edges[k] = e
	return e
}
