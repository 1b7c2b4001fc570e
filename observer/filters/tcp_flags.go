package filters

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// A tcp_flags value matches a flow that has at least all of its flags set.
func buildTCPFlags(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	want := ff.GetTcpFlags()
	if len(want) == 0 {
		return nil, nil
	}
	for _, w := range want {
		if w == nil {
			return nil, fieldErrf("tcp_flags", "empty flag set")
		}
	}
	return []FilterFunc{func(f *flowpb.Flow) bool {
		have := f.GetL4().GetTCP().GetFlags()
		if have == nil {
			return false
		}
		for _, w := range want {
			if (w.FIN && !have.FIN) || (w.SYN && !have.SYN) || (w.RST && !have.RST) ||
				(w.PSH && !have.PSH) || (w.ACK && !have.ACK) || (w.URG && !have.URG) ||
				(w.ECE && !have.ECE) || (w.CWR && !have.CWR) || (w.NS && !have.NS) {
				continue
			}
			return true
		}
		return false
	}}, nil
}
