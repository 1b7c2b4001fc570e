package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildDropReason(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	rs := ff.GetDropReasonDesc()
	if len(rs) == 0 {
		return nil, nil
	}
	for _, r := range rs {
		if _, ok := flowpb.DropReason_name[int32(r)]; !ok {
			return nil, fieldErrf("drop_reason_desc", "unknown drop reason %d", r)
		}
	}
	return []FilterFunc{func(f *flowpb.Flow) bool { return slices.Contains(rs, f.GetDropReasonDesc()) }}, nil
}
