package filters

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// dns_query values are RE2 expressions over the query name of L7 DNS flows.
func buildDNS(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	exprs := ff.GetDnsQuery()
	if len(exprs) == 0 {
		return nil, nil
	}
	res, err := compileRegexps("dns_query", exprs)
	if err != nil {
		return nil, err
	}
	return []FilterFunc{func(f *flowpb.Flow) bool {
		d := f.GetL7().GetDns()
		return d != nil && anyMatch(res, d.GetQuery())
	}}, nil
}
