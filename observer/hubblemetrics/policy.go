package hubblemetrics

import (
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
)

// policyHandler is the policy family: hubble_policy_verdicts_total{
// direction, match, action, contexts...}, every policy-verdict flow (and,
// once there are L7 flows, every L7 one with match "l7/<protocol>"),
// except verdicts on traffic from the node itself, which Hubble leaves out.
type policyHandler struct {
	ctx *contexts
	v   *vec
}

func newPolicyHandler(ctx *contexts, _ map[string]bool) handler {
	return &policyHandler{ctx: ctx, v: newVec("policy_verdicts_total", "Total number of Cilium network policy verdicts",
		append([]string{"direction", "match", "action"}, ctx.names()...))}
}

func (h *policyHandler) vec() *vec { return h.v }

func (h *policyHandler) contexts() *contexts { return h.ctx }

func (h *policyHandler) observe(f *flowpb.Flow) {
	var match string
	switch f.GetEventType().GetType() {
	case typePolicyVerdict:
		if f.GetSource().GetIdentity() == contract.IdentityHost {
			return
		}
		match = strings.ToLower(contract.PolicyMatchName(f.GetPolicyMatchType()))
	case typeAccessLog:
		match = "l7/"
		switch l7 := f.GetL7(); {
		case l7.GetDns() != nil:
			match += "dns"
		case l7.GetHttp() != nil:
			match += "http"
		}
	default:
		return
	}
	lv := append(h.v.lv[:0], strings.ToLower(f.GetTrafficDirection().String()), match, strings.ToLower(f.GetVerdict().String()))
	h.v.lv = h.ctx.values(lv, f)
	h.v.inc(h.v.lv)
}
