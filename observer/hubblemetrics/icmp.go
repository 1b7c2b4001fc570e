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
	var fam, typ string
	switch {
	case l4.GetICMPv4() != nil:
		i := l4.GetICMPv4()
		fam, typ = "IPv4", contract.ICMPTypeCode(false, uint8(i.GetType()), uint8(i.GetCode()))
	case l4.GetICMPv6() != nil:
		i := l4.GetICMPv6()
		fam, typ = "IPv6", contract.ICMPTypeCode(true, uint8(i.GetType()), uint8(i.GetCode()))
	default:
		return
	}
	lv := append(h.v.lv[:0], fam, typ)
	h.v.lv = h.ctx.values(lv, f)
	h.v.inc(h.v.lv)
}
