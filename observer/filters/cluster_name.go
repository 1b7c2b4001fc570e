package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildClusterName(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	if v := ff.GetSourceClusterName(); len(v) > 0 {
		fs = append(fs, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetSource().GetClusterName()) })
	}
	if v := ff.GetDestinationClusterName(); len(v) > 0 {
		fs = append(fs, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetDestination().GetClusterName()) })
	}
	return fs, nil
}
