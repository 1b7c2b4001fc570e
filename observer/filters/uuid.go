package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildUUID(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	ids := ff.GetUuid()
	if len(ids) == 0 {
		return nil, nil
	}
	for _, id := range ids {
		if id == "" {
			return nil, fieldErrf("uuid", "empty uuid")
		}
	}
	return []FilterFunc{func(f *flowpb.Flow) bool { return slices.Contains(ids, f.GetUuid()) }}, nil
}
