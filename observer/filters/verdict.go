package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildVerdict(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	vs := ff.GetVerdict()
	if len(vs) == 0 {
		return nil, nil
	}
	for _, v := range vs {
		if _, ok := flowpb.Verdict_name[int32(v)]; !ok {
			return nil, fieldErrf("verdict", "unknown verdict %d", v)
		}
	}
	return []FilterFunc{func(f *flowpb.Flow) bool { return slices.Contains(vs, f.GetVerdict()) }}, nil
}
