package filters

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildService(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	if v := ff.GetSourceService(); len(v) > 0 {
		want, err := parseNamespacedNames("source_service", v)
		if err != nil {
			return nil, err
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			s := f.GetSourceService()
			return matchNamespacedName(want, s.GetNamespace(), s.GetName())
		})
	}
	if v := ff.GetDestinationService(); len(v) > 0 {
		want, err := parseNamespacedNames("destination_service", v)
		if err != nil {
			return nil, err
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			s := f.GetDestinationService()
			return matchNamespacedName(want, s.GetNamespace(), s.GetName())
		})
	}
	return fs, nil
}
