package filters

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// FQDN filters match the DNS names a flow's addresses were resolved from;
// loupe fills them once it parses DNS, until then they match nothing.
func buildFQDN(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	for _, c := range []struct {
		field string
		pats  []string
		get   func(*flowpb.Flow) []string
	}{
		{"source_fqdn", ff.GetSourceFqdn(), (*flowpb.Flow).GetSourceNames},
		{"destination_fqdn", ff.GetDestinationFqdn(), (*flowpb.Flow).GetDestinationNames},
	} {
		if len(c.pats) == 0 {
			continue
		}
		re, err := compileFQDNPatterns(c.pats)
		if err != nil {
			return nil, fieldErr(c.field, err)
		}
		get := c.get
		fs = append(fs, func(f *flowpb.Flow) bool {
			for _, n := range get(f) {
				if re.MatchString(n) {
					return true
				}
			}
			return false
		})
	}
	return fs, nil
}
