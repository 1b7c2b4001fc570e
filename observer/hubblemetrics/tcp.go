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
	ipv := int64(f.GetIP().GetIpVersion())
	if fl.GetFIN() {
		h.count(f, tcpFIN, ipv)
	}
	if fl.GetSYN() {
		if fl.GetACK() {
			h.count(f, tcpSYNACK, ipv)
		} else {
			h.count(f, tcpSYN, ipv)
		}
	}
	if fl.GetRST() {
		h.count(f, tcpRST, ipv)
	}
}

// The flags the family counts, as the flag label names them.
const (
	tcpFIN = iota
	tcpSYN
	tcpSYNACK
	tcpRST
)

var tcpFlagNames = [...]string{tcpFIN: "FIN", tcpSYN: "SYN", tcpSYNACK: "SYN-ACK", tcpRST: "RST"}

func (h *tcpHandler) count(f *flowpb.Flow, flag int, ipVersion int64) {
	own, packed := pack(ipVersion, 0, int64(flag), 0, 0)
	k, ok := h.ctx.keyed(f, own, packed)
	if h.v.incKeyed(k, ok) {
		return
	}
	lv := append(h.v.lv[:0], tcpFlagNames[flag], f.GetIP().GetIpVersion().String())
	h.v.lv = h.ctx.values(lv, f)
	h.v.incAs(k, ok, h.v.lv)
}
