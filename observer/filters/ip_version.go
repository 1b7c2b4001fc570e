package filters

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildIPVersion(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	vs := ff.GetIpVersion()
	if len(vs) == 0 {
		return nil, nil
	}
	for _, v := range vs {
		if _, ok := flowpb.IPVersion_name[int32(v)]; !ok {
			return nil, fieldErrf("ip_version", "unknown IP version %d", v)
		}
	}
	return []FilterFunc{func(f *flowpb.Flow) bool { return slices.Contains(vs, f.GetIP().GetIpVersion()) }}, nil
}
