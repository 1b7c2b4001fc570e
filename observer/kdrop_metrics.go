package observer

import (
	"github.com/prometheus/client_golang/prometheus"
)

// kernelDropMetrics count the kernel drops this agent reports, by reason
// and by how they were tied to a pod; and those it left to others.
type kernelDropMetrics struct {
	drops  *prometheus.CounterVec
	others prometheus.Counter
}

func newKernelDropMetrics(reg *prometheus.Registry) *kernelDropMetrics {
	m := &kernelDropMetrics{
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "loupe", Name: "kernel_drops_total",
			Help: "Kernel drops reported by this agent, by the kernel's reason and by attribution (netns: the pod's namespace; address: a pod's address in the node's namespace; none: unattributed)",
		}, []string{"reason", "attributed_by"}),
		others: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "kernel_events_not_reported_total",
			Help: "Kernel events not reported: seen in namespaces of other nodes or of no node (left to the agent they belong to), or echo replies freed by ping_rcv after a raw socket took them",
		}),
	}
	reg.MustRegister(m.drops, m.others)
	return m
}

func (m *kernelDropMetrics) observe(reason, attributed string) {
	m.drops.WithLabelValues(KernelReasonShort(reason), attributed).Inc()
}
