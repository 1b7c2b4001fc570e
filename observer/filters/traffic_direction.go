package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildTrafficDirection(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	ds := ff.GetTrafficDirection()
	if len(ds) == 0 {
		return nil, nil
	}
	for _, d := range ds {
		if _, ok := flowpb.TrafficDirection_name[int32(d)]; !ok {
			return nil, fieldErrf("traffic_direction", "unknown direction %d", d)
		}
	}
	return []FilterFunc{func(f *flowpb.Flow) bool { return slices.Contains(ds, f.GetTrafficDirection()) }}, nil
}
