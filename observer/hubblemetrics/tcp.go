package hubblemetrics

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// tcpHandler is the tcp family: hubble_tcp_flags_total{flag, family,
// contexts...}, for forwarded (or redirected) TCP flows: one count per
// flag among SYN, SYN-ACK, FIN and RST. Dropped packets are not counted,
// so "SYN minus SYN-ACK" shows connections that were not answered.
type tcpHandler struct {
	ctx *contexts
	v   *vec
}

func newTCPHandler(ctx *contexts, _ map[string]bool) handler {
	return &tcpHandler{ctx: ctx, v: newVec("tcp_flags_total", "TCP flag occurrences",
		append([]string{"flag", "family"}, ctx.names()...))}
}

func (h *tcpHandler) vec() *vec { return h.v }

func (h *tcpHandler) contexts() *contexts { return h.ctx }

func (h *tcpHandler) observe(f *flowpb.Flow) {
	if v := f.GetVerdict(); v != flowpb.Verdict_FORWARDED && v != flowpb.Verdict_REDIRECTED {
		return
	}
	fl := f.GetL4().GetTCP().GetFlags()
	if f.GetIP() == nil || fl == nil {
		return
	}
	lv := append(h.v.lv[:0], "", f.GetIP().GetIpVersion().String())
	h.v.lv = h.ctx.values(lv, f)
	count := func(flag string) {
		h.v.lv[0] = flag
		h.v.inc(h.v.lv)
	}
	if fl.GetFIN() {
		count("FIN")
	}
	if fl.GetSYN() {
		if fl.GetACK() {
			count("SYN-ACK")
		} else {
			count("SYN")
		}
	}
	if fl.GetRST() {
		count("RST")
	}
}
