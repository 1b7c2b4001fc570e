package observer

import (
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// tcpMetrics count the TCP health events this agent reports, per edge at
// workload level: namespace and workload of both ends (a pod without a
// workload counts as its own; a peer that is no pod has empty labels).
// Per-connection counts are on the flows (connection_retransmits), where
// they cost no series.
type tcpMetrics struct {
	retransmits *prometheus.CounterVec
	resets      *prometheus.CounterVec
}

var edgeLabels = []string{"source_namespace", "source_workload", "destination_namespace", "destination_workload"}

func newTCPMetrics(reg *prometheus.Registry) *tcpMetrics {
	m := &tcpMetrics{
		retransmits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Name: "tcp_retransmits_total",
			Help: "TCP segments retransmitted, by the edge they were sent along (source = the sender)",
		}, edgeLabels),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Name: "tcp_resets_total",
			Help: "TCP resets, by edge (source = the end that sent it), by whether a local socket's stack sent or received it, and by the kernel's reason for sent ones (enum sk_rst_reason, without SK_RST_REASON_)",
		}, append(append([]string{}, edgeLabels...), "direction", "reason")),
	}
	reg.MustRegister(m.retransmits, m.resets)
	return m
}

func workloadOf(ep *flowpb.Endpoint) (ns, workload string) {
	if ep.GetNamespace() == "" {
		return "", ""
	}
	if w := ep.GetWorkloads(); len(w) > 0 && w[0].GetName() != "" {
		return ep.GetNamespace(), w[0].GetName()
	}
	return ep.GetNamespace(), ep.GetPodName()
}

// observe counts a decoded TCP record's flow; reason is a sent reset's
// reason name. Other records are ignored.
func (m *tcpMetrics) observe(ev *datapath.Event, f *flowpb.Flow, reason string) {
	kind := tcpEventKind(ev)
	if kind == "" {
		return
	}
	sns, sw := workloadOf(f.GetSource())
	dns, dw := workloadOf(f.GetDestination())
	switch kind {
	case contract.TCPEventRetransmit:
		m.retransmits.WithLabelValues(sns, sw, dns, dw).Add(float64(max(ev.PacketsFwd, 1)))
	case contract.TCPEventResetSent:
		m.resets.WithLabelValues(sns, sw, dns, dw, "sent", strings.TrimPrefix(reason, contract.TCPResetReasonPrefix)).Inc()
	default:
		m.resets.WithLabelValues(sns, sw, dns, dw, "received", "").Inc()
	}
}
