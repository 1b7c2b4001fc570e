package filters

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildEventType(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	ts := ff.GetEventType()
	if len(ts) == 0 {
		return nil, nil
	}
	for _, t := range ts {
		if t.GetType() < 0 || t.GetType() > 255 || t.GetSubType() < 0 || t.GetSubType() > 255 {
			return nil, fieldErrf("event_type", "type %d / sub_type %d out of range", t.GetType(), t.GetSubType())
		}
	}
	return []FilterFunc{func(f *flowpb.Flow) bool {
		et := f.GetEventType()
		if et == nil {
			return false
		}
		for _, t := range ts {
			// Type 0 matches any type; the sub type only counts when asked.
			if t.GetType() != 0 && t.GetType() != et.GetType() {
				continue
			}
			if t.GetMatchSubType() && t.GetSubType() != et.GetSubType() {
				continue
			}
			return true
		}
		return false
	}}, nil
}
