package filters

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// An interface filter matches on the index and/or the name; a zero value of
// either matches any.
func buildInterface(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	is := ff.GetInterface()
	if len(is) == 0 {
		return nil, nil
	}
	return []FilterFunc{func(f *flowpb.Flow) bool {
		fi := f.GetInterface()
		if fi == nil {
			return false
		}
		for _, i := range is {
			if (i.GetIndex() == 0 || i.GetIndex() == fi.GetIndex()) && (i.GetName() == "" || i.GetName() == fi.GetName()) {
				return true
			}
		}
		return false
	}}, nil
}
