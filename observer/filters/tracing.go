package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildTracing(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	if ids := ff.GetTraceId(); len(ids) > 0 {
		fs = append(fs, func(f *flowpb.Flow) bool {
			id := f.GetTraceContext().GetParent().GetTraceId()
			return id != "" && slices.Contains(ids, id)
		})
	}
	if ids := ff.GetIpTraceId(); len(ids) > 0 {
		fs = append(fs, func(f *flowpb.Flow) bool {
			id := f.GetIpTraceId().GetTraceId()
			return id != 0 && slices.Contains(ids, id)
		})
	}
	return fs, nil
}
