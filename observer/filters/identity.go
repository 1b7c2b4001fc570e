package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildIdentity(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	if v := ff.GetSourceIdentity(); len(v) > 0 {
		fs = append(fs, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetSource().GetIdentity()) })
	}
	if v := ff.GetDestinationIdentity(); len(v) > 0 {
		fs = append(fs, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetDestination().GetIdentity()) })
	}
	return fs, nil
}
