package hubblemetrics

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// dropHandler is the drop family: hubble_drop_total{contexts..., reason,
// protocol}, every flow whose verdict is DROPPED. Hubble puts the context
// labels first here, unlike its other families.
type dropHandler struct {
	ctx *contexts
	v   *vec
}

func newDropHandler(ctx *contexts, _ map[string]bool) handler {
	return &dropHandler{ctx: ctx, v: newVec("drop_total", "Number of drops",
		append(ctx.names(), "reason", "protocol"))}
}

func (h *dropHandler) vec() *vec { return h.v }

func (h *dropHandler) contexts() *contexts { return h.ctx }

func (h *dropHandler) observe(f *flowpb.Flow) {
	if f.GetVerdict() != flowpb.Verdict_DROPPED {
		return
	}
	own, packed := pack(int64(f.GetDropReasonDesc()), int64(f.GetEventType().GetType()),
		l4Kind(f.GetL4()), l7Kind(f.GetL7()), 0)
	k, ok := h.ctx.keyed(f, own, packed)
	if h.v.incKeyed(k, ok) {
		return
	}
	lv := h.ctx.values(h.v.lv[:0], f)
	h.v.lv = append(lv, f.GetDropReasonDesc().String(), flowProtocol(f))
	h.v.incAs(k, ok, h.v.lv)
}
