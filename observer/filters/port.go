package filters

import (
	"slices"
	"strconv"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// ports returns the L4 ports of a flow; ok is false for port-less protocols.
func ports(f *flowpb.Flow) (src, dst uint32, ok bool) {
	l4 := f.GetL4()
	if t := l4.GetTCP(); t != nil {
		return t.SourcePort, t.DestinationPort, true
	}
	if u := l4.GetUDP(); u != nil {
		return u.SourcePort, u.DestinationPort, true
	}
	if s := l4.GetSCTP(); s != nil {
		return s.SourcePort, s.DestinationPort, true
	}
	return 0, 0, false
}

func parsePorts(field string, vals []string) ([]uint32, error) {
	out := make([]uint32, 0, len(vals))
	for _, v := range vals {
		p, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			return nil, fieldErrf(field, "invalid port %q: %w", v, err)
		}
		out = append(out, uint32(p))
	}
	return out, nil
}

func buildPort(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	if v := ff.GetSourcePort(); len(v) > 0 {
		want, err := parsePorts("source_port", v)
		if err != nil {
			return nil, err
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			p, _, ok := ports(f)
			return ok && slices.Contains(want, p)
		})
	}
	if v := ff.GetDestinationPort(); len(v) > 0 {
		want, err := parsePorts("destination_port", v)
		if err != nil {
			return nil, err
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			_, p, ok := ports(f)
			return ok && slices.Contains(want, p)
		})
	}
	return fs, nil
}
