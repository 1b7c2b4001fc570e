package hubblemetrics

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// flowsToWorldHandler is the flows-to-world family:
// hubble_flows_to_world_total{protocol, verdict, [port,] contexts...},
// flows whose destination carries reserved:world (or world-ipv4/-ipv6)
// and an L4 header: forwarded ones that are not replies, and drops by
// policy (any drop with any-drop). syn-only keeps only TCP SYNs that are
// not replies; port adds the destination port.
type flowsToWorldHandler struct {
	ctx                    *contexts
	v                      *vec
	anyDrop, port, synOnly bool
	ports                  portNames
}

func newFlowsToWorldHandler(ctx *contexts, flags map[string]bool) handler {
	labels := []string{"protocol", "verdict"}
	if flags["port"] {
		labels = append(labels, "port")
	}
	return &flowsToWorldHandler{ctx: ctx, ports: portNames{}, anyDrop: flags["any-drop"], port: flags["port"], synOnly: flags["syn-only"],
		v: newVec("flows_to_world_total", "Total number of flows to reserved:world", append(labels, ctx.names()...))}
}

func (h *flowsToWorldHandler) vec() *vec { return h.v }

func (h *flowsToWorldHandler) contexts() *contexts { return h.ctx }

var worldLabels = []string{"reserved:world", "reserved:world-ipv4", "reserved:world-ipv6"}

func (h *flowsToWorldHandler) observe(f *flowpb.Flow) {
	l4 := f.GetL4()
	if f.GetDestination() == nil || f.GetEventType() == nil || l4 == nil ||
		!slices.ContainsFunc(f.GetDestination().GetLabels(), func(l string) bool { return slices.Contains(worldLabels, l) }) {
		return
	}
	dropped := f.GetVerdict() == flowpb.Verdict_DROPPED
	if dropped && !h.anyDrop && f.GetDropReasonDesc() != flowpb.DropReason_POLICY_DENIED {
		return
	}
	reply := f.GetIsReply().GetValue()
	if !dropped && reply {
		return
	}
	if h.synOnly && (!l4.GetTCP().GetFlags().GetSYN() || reply) {
		return
	}
	lv := append(h.v.lv[:0], flowProtocol(f), f.GetVerdict().String())
	if h.port {
		var p string
		switch {
		case l4.GetTCP() != nil:
			p = h.ports.name(l4.GetTCP().GetDestinationPort())
		case l4.GetUDP() != nil:
			p = h.ports.name(l4.GetUDP().GetDestinationPort())
		case l4.GetSCTP() != nil:
			p = h.ports.name(l4.GetSCTP().GetDestinationPort())
		}
		lv = append(lv, p)
	}
	h.v.lv = h.ctx.values(lv, f)
	h.v.inc(h.v.lv)
}
