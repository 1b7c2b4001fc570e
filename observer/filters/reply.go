package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// As in Hubble: a flow whose reply state is unknown matches nothing, except
// drops, which count as not replies.
func buildReply(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	want := ff.GetReply()
	if len(want) == 0 {
		return nil, nil
	}
	return []FilterFunc{func(f *flowpb.Flow) bool {
		if f.GetIsReply() == nil && f.GetVerdict() != flowpb.Verdict_DROPPED {
			return false
		}
		return slices.Contains(want, f.GetIsReply().GetValue())
	}}, nil
}
