package filters

import (
	"net/netip"
	"slices"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildIP(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	for _, c := range []struct {
		field string
		vals  []string
		get   func(*flowpb.Flow) string
	}{
		{"source_ip", ff.GetSourceIp(), func(f *flowpb.Flow) string { return f.GetIP().GetSource() }},
		{"destination_ip", ff.GetDestinationIp(), func(f *flowpb.Flow) string { return f.GetIP().GetDestination() }},
		{"source_ip_xlated", ff.GetSourceIpXlated(), func(f *flowpb.Flow) string { return f.GetIP().GetSourceXlated() }},
	} {
		if len(c.vals) == 0 {
			continue
		}
		fn, err := ipMatcher(c.field, c.vals, c.get)
		if err != nil {
			return nil, err
		}
		fs = append(fs, fn)
	}
	return fs, nil
}

// ipMatcher matches exact addresses or CIDR prefixes. Addresses are compared
// parsed, so "::ffff:10.0.0.1" style spellings do not matter.
func ipMatcher(field string, vals []string, get func(*flowpb.Flow) string) (FilterFunc, error) {
	var addrs []netip.Addr
	var prefixes []netip.Prefix
	for _, v := range vals {
		if strings.Contains(v, "/") {
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return nil, fieldErrf(field, "invalid IP prefix %q: %w", v, err)
			}
			prefixes = append(prefixes, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, fieldErrf(field, "invalid IP address %q: %w", v, err)
		}
		addrs = append(addrs, a)
	}
	return func(f *flowpb.Flow) bool {
		s := get(f)
		if s == "" {
			return false
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return false
		}
		if slices.Contains(addrs, a) {
			return true
		}
		for _, p := range prefixes {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}, nil
}
