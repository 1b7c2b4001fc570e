package hubblemetrics

import (
	"strconv"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
)

const (
	typeDrop          = contract.MessageTypeDrop
	typeCapture       = contract.MessageTypeCapture
	typeTrace         = contract.MessageTypeTrace
	typePolicyVerdict = contract.MessageTypePolicyVerdict
	typeAccessLog     = contract.MessageTypeAccessLog
)

// flowHandler is the flow family: hubble_flows_processed_total{protocol,
// type, subtype, verdict, contexts...}, every flow once.
type flowHandler struct {
	ctx *contexts
	v   *vec
}

func newFlowHandler(ctx *contexts, _ map[string]bool) handler {
	return &flowHandler{ctx: ctx, v: newVec("flows_processed_total", "Total number of flows processed",
		append([]string{"protocol", "type", "subtype", "verdict"}, ctx.names()...))}
}

func (h *flowHandler) vec() *vec { return h.v }

func (h *flowHandler) contexts() *contexts { return h.ctx }

func (h *flowHandler) observe(f *flowpb.Flow) {
	et := f.GetEventType()
	own, packed := pack(int64(et.GetType()), int64(et.GetSubType()),
		int64(f.GetVerdict()), l4Kind(f.GetL4()), l7Kind(f.GetL7()))
	k, ok := h.ctx.keyed(f, own, packed)
	if h.v.incKeyed(k, ok) {
		return
	}
	typ, sub := flowTypeNames(f)
	lv := append(h.v.lv[:0], flowProtocol(f), typ, sub, f.GetVerdict().String())
	h.v.lv = h.ctx.values(lv, f)
	h.v.incAs(k, ok, h.v.lv)
}

// flowTypeNames are the type and subtype labels: the monitor message type,
// and for a trace its observation point, for L7 its protocol.
func flowTypeNames(f *flowpb.Flow) (string, string) {
	et := f.GetEventType().GetType()
	switch et {
	case typeAccessLog:
		switch l7Kind(f.GetL7()) {
		case l7DNS:
			return "L7", "DNS"
		case l7HTTP:
			return "L7", "HTTP"
		}
		return "L7", ""
	case typeDrop:
		return "Drop", ""
	case typeCapture:
		return "Capture", ""
	case typeTrace:
		// Hubble names known points only; an unknown one is "".
		if p := f.GetEventType().GetSubType(); p >= 0 && int(p) < len(contract.TraceObservationPointNames) {
			return "Trace", contract.TraceObservationPointNames[p]
		}
		return "Trace", ""
	case typePolicyVerdict:
		return "PolicyVerdict", ""
	}
	return "Unknown", strconv.Itoa(int(et))
}
