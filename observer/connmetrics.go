package observer

import (
	"net/netip"
	"slices"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-project/loupe/contract"
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

const (
	// maxConnStates bounds the per-connection state (the datapath's
	// conntrack holds as many entries).
	maxConnStates = 65536
	// connStateTTL is how long a connection's state outlives its last
	// flow: a live one gets a periodic flow every report interval.
	connStateTTL = 30 * time.Second
)

type connKey struct {
	client, server netip.AddrPort
	ifindex        uint32
}

type connState struct {
	pktSent, bytesSent, pktRecv, bytesRecv uint64
	timed                                  bool
	seen                                   uint64 // flow time, ns
}

type connMetrics struct {
	bytes, packets *prometheus.CounterVec // label "direction": sent (client to server) or received
	conns          *prometheus.CounterVec
	handshake      *prometheus.HistogramVec
	untracked      prometheus.Counter

	states    map[connKey]*connState
	lastSweep uint64
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
		states: make(map[connKey]*connState),
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

// observe counts the growth of a connection flow's totals.
func (m *connMetrics) observe(f *flowpb.Flow) {
	c := contract.Connection(f)
	if c == nil {
		return
	}
	now := uint64(f.GetTime().AsTime().UnixNano())
	m.sweep(now)
	client, server := f.GetSource(), f.GetDestination()
	cip, sip := f.GetIP().GetSource(), f.GetIP().GetDestination()
	cport, sport := l4Ports(f)
	if f.GetIsReply().GetValue() {
		client, server, cip, sip, cport, sport = server, client, sip, cip, sport, cport
	}
	ca, _ := netip.ParseAddr(cip)
	sa, _ := netip.ParseAddr(sip)
	k := connKey{netip.AddrPortFrom(ca, cport), netip.AddrPortFrom(sa, sport), f.GetInterface().GetIndex()}
	cns, cw := edgeName(client)
	sns, sw := edgeName(server)

	n := func(key string) uint64 { return uint64(c[key].GetNumberValue()) }
	cur := connState{
		pktSent: n(contract.ExtConnPacketsSent), bytesSent: n(contract.ExtConnBytesSent),
		pktRecv: n(contract.ExtConnPacketsReceived), bytesRecv: n(contract.ExtConnBytesReceived),
		seen: now,
	}
	st := m.states[k]
	if st == nil || cur.pktSent < st.pktSent || cur.pktRecv < st.pktRecv {
		// New, or the 5-tuple was reused by a new connection (totals restart).
		if st == nil && len(m.states) >= maxConnStates {
			m.untracked.Inc()
			return
		}
		st = &connState{}
		m.states[k] = st
		m.conns.WithLabelValues(cns, cw, sns, sw).Inc()
	}
	add := func(v *prometheus.CounterVec, dir string, d uint64) {
		if d > 0 {
			v.WithLabelValues(cns, cw, sns, sw, dir).Add(float64(d))
		}
	}
	add(m.bytes, "sent", cur.bytesSent-st.bytesSent)
	add(m.bytes, "received", cur.bytesRecv-st.bytesRecv)
	add(m.packets, "sent", cur.pktSent-st.pktSent)
	add(m.packets, "received", cur.pktRecv-st.pktRecv)
	cur.timed = st.timed
	if hs := n(contract.ExtConnHandshakeNS); hs > 0 && !st.timed {
		m.handshake.WithLabelValues(cns, cw, sns, sw).Observe(float64(hs) / 1e9)
		cur.timed = true
	}
	*st = cur
}

// sweep forgets connections without a flow for connStateTTL, at most once
// per second of flow time.
func (m *connMetrics) sweep(now uint64) {
	if now-m.lastSweep < uint64(time.Second) && now >= m.lastSweep {
		return
	}
	m.lastSweep = now
	for k, st := range m.states {
		if now > st.seen && now-st.seen > uint64(connStateTTL) {
			delete(m.states, k)
		}
	}
}

func l4Ports(f *flowpb.Flow) (src, dst uint16) {
	switch l4 := f.GetL4().GetProtocol().(type) {
	case *flowpb.Layer4_TCP:
		return uint16(l4.TCP.GetSourcePort()), uint16(l4.TCP.GetDestinationPort())
	case *flowpb.Layer4_UDP:
		return uint16(l4.UDP.GetSourcePort()), uint16(l4.UDP.GetDestinationPort())
	case *flowpb.Layer4_SCTP:
		return uint16(l4.SCTP.GetSourcePort()), uint16(l4.SCTP.GetDestinationPort())
	}
	return 0, 0
}
