package filters

import (
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func buildProtocol(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	ps := ff.GetProtocol()
	if len(ps) == 0 {
		return nil, nil
	}
	var checks []func(*flowpb.Flow) bool
	for _, p := range ps {
		var c func(*flowpb.Flow) bool
		switch strings.ToLower(p) {
		case "tcp":
			c = func(f *flowpb.Flow) bool { return f.GetL4().GetTCP() != nil }
		case "udp":
			c = func(f *flowpb.Flow) bool { return f.GetL4().GetUDP() != nil }
		case "sctp":
			c = func(f *flowpb.Flow) bool { return f.GetL4().GetSCTP() != nil }
		case "icmp":
			c = func(f *flowpb.Flow) bool { return f.GetL4().GetICMPv4() != nil || f.GetL4().GetICMPv6() != nil }
		case "icmpv4":
			c = func(f *flowpb.Flow) bool { return f.GetL4().GetICMPv4() != nil }
		case "icmpv6":
			c = func(f *flowpb.Flow) bool { return f.GetL4().GetICMPv6() != nil }
		case "vrrp":
			c = func(f *flowpb.Flow) bool { return f.GetL4().GetVRRP() != nil }
		case "igmp":
			c = func(f *flowpb.Flow) bool { return f.GetL4().GetIGMP() != nil }
		case "dns":
			c = func(f *flowpb.Flow) bool { return f.GetL7().GetDns() != nil }
		case "http":
			c = func(f *flowpb.Flow) bool { return f.GetL7().GetHttp() != nil }
		default:
			return nil, fieldErrf("protocol", "unknown protocol %q", p)
		}
		checks = append(checks, c)
	}
	return []FilterFunc{func(f *flowpb.Flow) bool {
		for _, c := range checks {
			if c(f) {
				return true
			}
		}
		return false
	}}, nil
}
