package filters

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func workloadMatcher(want []*flowpb.Workload, get func(*flowpb.Flow) *flowpb.Endpoint) FilterFunc {
	return func(f *flowpb.Flow) bool {
		for _, w := range get(f).GetWorkloads() {
			for _, x := range want {
				if (x.GetName() == "" || x.GetName() == w.GetName()) && (x.GetKind() == "" || x.GetKind() == w.GetKind()) {
					return true
				}
			}
		}
		return false
	}
}

func buildWorkload(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	if v := ff.GetSourceWorkload(); len(v) > 0 {
		fs = append(fs, workloadMatcher(v, (*flowpb.Flow).GetSource))
	}
	if v := ff.GetDestinationWorkload(); len(v) > 0 {
		fs = append(fs, workloadMatcher(v, (*flowpb.Flow).GetDestination))
	}
	return fs, nil
}
