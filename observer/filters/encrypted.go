package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildEncrypted(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	want := ff.GetEncrypted()
	if len(want) == 0 {
		return nil, nil
	}
	return []FilterFunc{func(f *flowpb.Flow) bool {
		return f.GetIP() != nil && slices.Contains(want, f.GetIP().GetEncrypted())
	}}, nil
}
