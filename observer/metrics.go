package observer

import (
	"net/http"
	"strconv"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/loupe-project/loupe/contract"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics uses Hubble's names where one exists, so Hubble dashboards work.
type metrics struct {
	reg          *prometheus.Registry
	flows        *prometheus.CounterVec
	drops        *prometheus.CounterVec
	lost         prometheus.Counter
	decodeErrors prometheus.Counter

	// Counters resolved once per label set: WithLabelValues hashes strings,
	// too slow for every flow. Only the HandleEvent goroutine uses these.
	flowCounters map[flowKey]prometheus.Counter
	dropCounters map[flowKey]prometheus.Counter
}

type flowKey struct {
	proto, typ, subType uint8
	verdict             int32
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		flows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hubble", Name: "flows_processed_total",
			Help: "Total number of flows processed",
		}, []string{"protocol", "type", "subtype", "verdict"}),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "hubble", Name: "drop_total",
			Help: "Number of drops",
		}, []string{"reason", "protocol"}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "events_lost_total",
			Help: "Datapath events lost before the observer read them (ring buffer full or short records)",
		}),
		decodeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "loupe", Name: "decode_errors_total",
			Help: "Datapath records the observer could not decode",
		}),
		flowCounters: map[flowKey]prometheus.Counter{},
		dropCounters: map[flowKey]prometheus.Counter{},
	}
	m.reg.MustRegister(m.flows, m.drops, m.lost, m.decodeErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// protocolName is Hubble's v1.FlowProtocol.
func protocolName(f *flowpb.Flow) string {
	switch l4 := f.GetL4(); {
	case l4.GetTCP() != nil:
		return "TCP"
	case l4.GetUDP() != nil:
		return "UDP"
	case l4.GetICMPv4() != nil:
		return "ICMPv4"
	case l4.GetICMPv6() != nil:
		return "ICMPv6"
	case l4.GetSCTP() != nil:
		return "SCTP"
	}
	return "Unknown flow"
}

func (m *metrics) observe(f *flowpb.Flow, proto, typ, subType uint8) {
	k := flowKey{proto: proto, typ: typ, subType: subType, verdict: int32(f.Verdict)}
	c := m.flowCounters[k]
	if c == nil {
		var typeName, sub string
		switch typ {
		case contract.MessageTypeDrop:
			typeName = "Drop"
		case contract.MessageTypeTrace:
			typeName = "Trace"
			sub = contract.TraceObservationPointName(subType)
		case contract.MessageTypePolicyVerdict:
			typeName = "PolicyVerdict"
		default:
			typeName, sub = "Unknown", strconv.Itoa(int(typ))
		}
		c = m.flows.WithLabelValues(protocolName(f), typeName, sub, f.Verdict.String())
		m.flowCounters[k] = c
	}
	c.Inc()
	if f.Verdict != flowpb.Verdict_DROPPED {
		return
	}
	k = flowKey{proto: proto, subType: uint8(f.DropReasonDesc)}
	d := m.dropCounters[k]
	if d == nil {
		d = m.drops.WithLabelValues(f.DropReasonDesc.String(), protocolName(f))
		m.dropCounters[k] = d
	}
	d.Inc()
}
