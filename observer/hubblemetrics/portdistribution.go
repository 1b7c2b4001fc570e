package hubblemetrics

import (
	"strconv"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// portDistributionHandler is the port-distribution family:
// hubble_port_distribution_total{protocol, port, contexts...}, forwarded
// (or redirected) flows that are known not to be replies, by destination
// port ("0" for ICMP).
type portDistributionHandler struct {
	ctx   *contexts
	v     *vec
	ports portNames
}

func newPortDistributionHandler(ctx *contexts, _ map[string]bool) handler {
	return &portDistributionHandler{ctx: ctx, ports: portNames{}, v: newVec("port_distribution_total", "Numbers of packets distributed by destination port",
		append([]string{"protocol", "port"}, ctx.names()...))}
}

func (h *portDistributionHandler) vec() *vec { return h.v }

func (h *portDistributionHandler) contexts() *contexts { return h.ctx }

// portNames formats ports, remembering the ones seen so that a flow
// costs no allocation; bounded like the counter caches.
type portNames map[uint32]string

func (p portNames) name(port uint32) string {
	if s, ok := p[port]; ok {
		return s
	}
	s := strconv.FormatUint(uint64(port), 10)
	if len(p) >= maxCached {
		clear(p)
	}
	p[port] = s
	return s
}

func (h *portDistributionHandler) observe(f *flowpb.Flow) {
	if v := f.GetVerdict(); v != flowpb.Verdict_FORWARDED && v != flowpb.Verdict_REDIRECTED {
		return
	}
	// A flow without is_reply (a drop, a policy verdict) is skipped, as Hubble does.
	if r := f.GetIsReply(); r == nil || r.GetValue() {
		return
	}
	l4 := f.GetL4()
	kind := l4Kind(l4)
	if kind == l4Unknown {
		return
	}
	var dport uint32
	switch kind {
	case l4TCP:
		dport = l4.GetTCP().GetDestinationPort()
	case l4UDP:
		dport = l4.GetUDP().GetDestinationPort()
	case l4SCTP:
		dport = l4.GetSCTP().GetDestinationPort()
	}
	own, packed := pack(int64(dport), 0, kind, 0, 0)
	k, ok := h.ctx.keyed(f, own, packed)
	if h.v.incKeyed(k, ok) {
		return
	}
	port := "0"
	if kind == l4TCP || kind == l4UDP || kind == l4SCTP {
		port = h.ports.name(dport)
	}
	lv := append(h.v.lv[:0], l4Names[kind], port)
	h.v.lv = h.ctx.values(lv, f)
	h.v.incAs(k, ok, h.v.lv)
}
