package hubblemetrics

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
)

// icmpHandler is the icmp family: hubble_icmp_total{family, type,
// contexts...}, every ICMP flow whatever its verdict; type is the message
// name Hubble uses ("EchoRequest", "DestinationUnreachable(Port)").
type icmpHandler struct {
	ctx *contexts
	v   *vec
}

func newICMPHandler(ctx *contexts, _ map[string]bool) handler {
	return &icmpHandler{ctx: ctx, v: newVec("icmp_total", "Number of ICMP messages",
		append([]string{"family", "type"}, ctx.names()...))}
}

func (h *icmpHandler) vec() *vec { return h.v }

func (h *icmpHandler) contexts() *contexts { return h.ctx }

func (h *icmpHandler) observe(f *flowpb.Flow) {
	l4 := f.GetL4()
	var v6 bool
	var icmpType, icmpCode uint32
	switch {
	case l4.GetICMPv4() != nil:
		icmpType, icmpCode = l4.GetICMPv4().GetType(), l4.GetICMPv4().GetCode()
	case l4.GetICMPv6() != nil:
		v6, icmpType, icmpCode = true, l4.GetICMPv6().GetType(), l4.GetICMPv6().GetCode()
	default:
		return
	}
	// The label reads the type and code as bytes: so does the key.
	fam := int64(4)
	if v6 {
		fam = 6
	}
	own, packed := pack(int64(uint8(icmpType)), int64(uint8(icmpCode)), fam, 0, 0)
	k, ok := h.ctx.keyed(f, own, packed)
	if h.v.incKeyed(k, ok) {
		return
	}
	lv := append(h.v.lv[:0], "IPv4", contract.ICMPTypeCode(v6, uint8(icmpType), uint8(icmpCode)))
	if v6 {
		lv[0] = "IPv6"
	}
	h.v.lv = h.ctx.values(lv, f)
	h.v.incAs(k, ok, h.v.lv)
}
