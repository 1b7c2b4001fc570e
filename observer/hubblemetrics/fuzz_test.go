package hubblemetrics

import (
	"reflect"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/internal/promtext"
)

// FuzzParse: any --metrics value either fails to parse or gives specs
// that print and read back the same and build a Set that counts flows
// without a label mismatch.
func FuzzParse(f *testing.F) {
	for _, s := range []string{Default, Dashboards, "flow:labelsContext=source_ip,drop", "flows-to-world:port;any-drop", "a,b c:d=e|f;g", "flow:sourceIngressContext=pod|ip;destinationEgressContext=dns"} {
		f.Add(s)
	}
	flows := sampleFlows()
	f.Fuzz(func(t *testing.T, s string) {
		specs, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(String(specs))
		if err != nil || !reflect.DeepEqual(again, specs) {
			t.Fatalf("%q -> %q -> %v %v", s, String(specs), again, err)
		}
		set, err := New(prometheus.NewRegistry(), specs)
		if err != nil {
			t.Fatalf("%q: New: %v", s, err)
		}
		for _, fl := range flows {
			set.Observe(fl)
		}
		if n := set.labelErrors(); n != 0 {
			t.Fatalf("%q: %d label errors", s, n)
		}
	})
}

// FuzzKeyedSeries: the counters a flow's countKey finds are the ones its
// label values name. Flows built from the fuzzer's bytes go through a Set
// that keys series by countKey and one that only joins label values; every
// family's exported counts must be equal after each flow.
func FuzzKeyedSeries(f *testing.F) {
	f.Add([]byte{1, 5, 1, 1, 0, 80, 2, 0, 1})
	f.Add([]byte{1, 0, 1, 1, 0, 80, 0x12, 0, 2})
	f.Add([]byte{2, 133, 2, 2, 0, 53, 0, 1, 3})
	f.Add([]byte{3, 8, 1, 3, 0, 0, 0, 0, 0, 9, 8, 7, 6, 5, 4, 3})
	f.Add([]byte{4, 0, 4, 4, 1, 0, 5, 1, 4, 128, 0, 1, 0x14})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, spec := range []string{Default, Dashboards, familiesSpec} {
			keyedReg, plainReg := prometheus.NewRegistry(), prometheus.NewRegistry()
			keyed, err := New(keyedReg, MustParse(spec))
			if err != nil {
				t.Fatal(err)
			}
			plain, err := New(plainReg, MustParse(spec))
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range plain.handlers {
				for _, v := range vecsOf(h) {
					v.byKey, v.byOwn = nil, nil
				}
			}
			for rest := data; len(rest) >= 9; rest = rest[9:] {
				fl := fuzzFlow(rest[:9])
				keyed.Observe(fl)
				plain.Observe(fl)
				if a, b := gatherText(t, keyedReg), gatherText(t, plainReg); a != b {
					t.Fatalf("%q, after %v:\nkeyed:\n%s\nlabels only:\n%s", spec, fl, a, b)
				}
			}
		}
	})
}

// fuzzFlow builds a flow from 9 bytes: event type, subtype, verdict, L4
// kind, IP version, port, TCP flags / ICMP type, endpoint pair and
// direction, drop reason.
func fuzzFlow(b []byte) *flowpb.Flow {
	eps := []*flowpb.Endpoint{epA, epB, epC, epHost, epWorld}
	types := []int32{typeDrop, typeTrace, typePolicyVerdict, typeAccessLog, typeCapture, 200, -1}
	fl := &flowpb.Flow{
		EventType:        &flowpb.CiliumEventType{Type: types[int(b[0])%len(types)], SubType: int32(int8(b[1]))},
		Verdict:          flowpb.Verdict(b[2] % 12),
		Source:           eps[int(b[7])%len(eps)],
		Destination:      eps[int(b[7]/5)%len(eps)],
		TrafficDirection: flowpb.TrafficDirection(b[7] / 25 % 3),
		DropReasonDesc:   flowpb.DropReason(b[8]),
		IsReply:          wrapperspb.Bool(b[8]&1 == 1),
		IP:               ip4("10.0.0.1", "10.0.0.2"),
	}
	if b[4]&1 == 1 {
		fl.IP.IpVersion = flowpb.IPVersion_IPv6
	}
	port := uint32(b[5]) | uint32(b[4])<<8
	switch b[3] % 8 {
	case 1:
		fl.L4 = tcpL4(40000, port, &flowpb.TCPFlags{FIN: b[6]&1 != 0, SYN: b[6]&2 != 0, RST: b[6]&4 != 0, ACK: b[6]&0x10 != 0})
	case 2:
		fl.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{DestinationPort: port}}}
	case 3:
		fl.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: uint32(b[6]) | uint32(b[4])<<8, Code: uint32(b[5])}}}
	case 4:
		fl.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: uint32(b[6]), Code: uint32(b[5])}}}
	case 5:
		fl.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_SCTP{SCTP: &flowpb.SCTP{DestinationPort: port}}}
	case 6:
		fl.L4 = &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{}} // a oneof with a nil message
	case 7:
		fl.L4 = &flowpb.Layer4{}
	}
	switch b[8] % 4 {
	case 1:
		fl.L7 = &flowpb.Layer7{Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: "a.example."}}}
	case 2:
		fl.L7 = &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Method: "GET", Code: 200}}}
	}
	if b[8]&0x80 != 0 {
		fl.IsReply = nil
	}
	return fl
}

// gatherText is the registry's metrics in the text format.
func gatherText(t *testing.T, g prometheus.Gatherer) string {
	t.Helper()
	text, err := promtext.Gather(g)
	if err != nil {
		t.Fatal(err)
	}
	return text
}
