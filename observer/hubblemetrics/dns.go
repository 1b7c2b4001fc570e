package hubblemetrics

import (
	"strconv"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// dnsHandler is the dns family: hubble_dns_queries_total and
// hubble_dns_responses_total{rcode, qtypes, ips_returned, [query],
// contexts...} and hubble_dns_response_types_total{type, qtypes, [query],
// contexts...}, from L7 DNS flows, with Hubble's options "query" (adds the
// query name: unbounded, as in Hubble) and "ignoreAAAA". A query's rcode is
// "" (Hubble's), a response's the name Hubble gives it. A loupe timeout
// flow (verdict ERROR: no answer came) is no response and is not counted
// here; loupe_dns_queries_unanswered_total counts it.
type dnsHandler struct {
	ctx                       *contexts
	query, ignoreAAAA         bool
	queries, responses, types *vec
}

func newDNSHandler(ctx *contexts, flags map[string]bool) handler {
	h := &dnsHandler{ctx: ctx, query: flags["query"], ignoreAAAA: flags["ignoreaaaa"]}
	qr := []string{"rcode", "qtypes", "ips_returned"}
	rt := []string{"type", "qtypes"}
	if h.query {
		qr, rt = append(qr, "query"), append(rt, "query")
	}
	h.queries = newVec("dns_queries_total", "Number of DNS queries observed", append(qr, ctx.names()...))
	h.responses = newVec("dns_responses_total", "Number of DNS responses observed", append(qr, ctx.names()...))
	h.types = newVec("dns_response_types_total", "Number of DNS response types observed", append(rt, ctx.names()...))
	return h
}

func (h *dnsHandler) vec() *vec           { return h.queries }
func (h *dnsHandler) more() []*vec        { return []*vec{h.responses, h.types} }
func (h *dnsHandler) contexts() *contexts { return h.ctx }

func (h *dnsHandler) observe(f *flowpb.Flow) {
	d := f.GetL7().GetDns()
	if d == nil || f.GetVerdict() == flowpb.Verdict_ERROR {
		return
	}
	if h.ignoreAAAA && len(d.GetQtypes()) == 1 && d.GetQtypes()[0] == "AAAA" {
		return
	}
	qtypes := strings.Join(d.GetQtypes(), ",")
	ips := strconv.Itoa(len(d.GetIps()))
	count := func(v *vec, lv ...string) {
		if h.query {
			lv = append(lv, d.GetQuery())
		}
		v.lv = h.ctx.values(append(v.lv[:0], lv...), f)
		v.inc(v.lv)
	}
	switch {
	case f.GetVerdict() == flowpb.Verdict_DROPPED:
		count(h.queries, "Policy denied", qtypes, ips)
	case !f.GetIsReply().GetValue():
		count(h.queries, "", qtypes, ips)
	default:
		count(h.responses, dnsRCodeNames[d.GetRcode()], qtypes, ips)
		for _, t := range d.GetRrtypes() {
			count(h.types, t, qtypes)
		}
	}
}

// dnsRCodeNames are the rcode label values of Hubble's dns metrics (its
// own table, which differs from its flow summaries' in places: 9, 11, 23).
var dnsRCodeNames = map[uint32]string{
	0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
	4: "Not Implemented", 5: "Query Refused", 6: "Name Exists when it should not",
	7: "RR Set Exists when it should not", 8: "RR Set that should exist does not",
	9: "Not Authorized", 10: "Name not contained in zone", 11: "DSO-TYPE Not Implemented",
	16: "Bad OPT Version", 17: "Key not recognized", 18: "Signature out of time window",
	19: "Bad TKEY Mode", 20: "Duplicate key name", 21: "Algorithm not supported",
	22: "Bad Truncation", 23: "Bad/missing Server Cookie",
}
