package observer

import (
	"net/netip"
	"regexp"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

var (
	webEP = func(id, identity uint32) *flowpb.Endpoint {
		return &flowpb.Endpoint{
			ID: id, Identity: identity, Namespace: "x", PodName: "web-5d8f7c6b9-abcde",
			Labels: []string{
				"k8s:app=web",
				"k8s:io.cilium.k8s.namespace.labels.team=blue",
				"k8s:io.cilium.k8s.policy.serviceaccount=websa",
				"k8s:io.kubernetes.pod.namespace=x",
			},
			Workloads: []*flowpb.Workload{{Name: "web", Kind: "Deployment"}},
		}
	}
	clientEP = func(id, identity uint32) *flowpb.Endpoint {
		return &flowpb.Endpoint{
			ID: id, Identity: identity, Namespace: "x", PodName: "b",
			Labels: []string{
				"k8s:app=client",
				"k8s:io.cilium.k8s.namespace.labels.team=blue",
				"k8s:io.kubernetes.pod.namespace=x",
			},
			Workloads: []*flowpb.Workload{{Name: "client", Kind: "Deployment"}},
		}
	}
	dbEP = func(id, identity uint32) *flowpb.Endpoint {
		return &flowpb.Endpoint{
			ID: id, Identity: identity, Namespace: "y", PodName: "db-0",
			Labels:    []string{"k8s:app=db", "k8s:io.kubernetes.pod.namespace=y"},
			Workloads: []*flowpb.Workload{{Name: "db", Kind: "StatefulSet"}},
		}
	}
)

func tcpL4(sport, dport uint32, f *flowpb.TCPFlags) *flowpb.Layer4 {
	return &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport, Flags: f}}}
}

func TestDecode(t *testing.T) {
	iface := &flowpb.NetworkInterface{Index: 7, Name: "lxch"}
	tests := []struct {
		name string
		ev   evSpec
		want *flowpb.Flow
	}{{
		name: "tcp syn from pod, egress, to a service",
		ev: evSpec{typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 6, tcpFlags: 0x02, flags: datapath.FlagCTNew,
			ifindex: 7, epID: 11, srcID: 1001, dstID: 1002, src: "10.0.1.11", dst: "10.96.0.50",
			sport: 40000, dport: 80, dir: contract.DirectionEgress},
		want: &flowpb.Flow{
			Verdict:               flowpb.Verdict_FORWARDED,
			IP:                    &flowpb.IP{Source: "10.0.1.11", Destination: "10.96.0.50", IpVersion: flowpb.IPVersion_IPv4},
			L4:                    tcpL4(40000, 80, &flowpb.TCPFlags{SYN: true}),
			Source:                clientEP(11, 1001),
			Destination:           &flowpb.Endpoint{Identity: 1002},
			Type:                  flowpb.FlowType_L3_L4,
			NodeName:              "node-1",
			EventType:             &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 5},
			DestinationService:    &flowpb.Service{Name: "web", Namespace: "x"},
			TrafficDirection:      flowpb.TrafficDirection_EGRESS,
			TraceObservationPoint: flowpb.TraceObservationPoint_FROM_ENDPOINT,
			IsReply:               wrapperspb.Bool(false),
			Interface:             iface,
			Summary:               "TCP Flags: SYN",
		},
	}, {
		name: "tcp syn-ack reply to pod, ingress packet of an egress connection",
		ev: evSpec{typ: contract.MessageTypeTrace, obs: contract.TraceToLxc, verdict: contract.VerdictForwarded, proto: 6, tcpFlags: 0x12, flags: datapath.FlagReply,
			ifindex: 7, epID: 11, srcID: 1000, dstID: 1001, src: "10.0.1.10", dst: "10.0.1.11",
			sport: 80, dport: 40000, dir: contract.DirectionIngress},
		want: &flowpb.Flow{
			Verdict:     flowpb.Verdict_FORWARDED,
			IP:          &flowpb.IP{Source: "10.0.1.10", Destination: "10.0.1.11", IpVersion: flowpb.IPVersion_IPv4},
			L4:          tcpL4(80, 40000, &flowpb.TCPFlags{SYN: true, ACK: true}),
			Source:      webEP(0, 1000),
			Destination: clientEP(11, 1001),
			Type:        flowpb.FlowType_L3_L4, NodeName: "node-1",
			EventType:             &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 0},
			TrafficDirection:      flowpb.TrafficDirection_EGRESS,
			TraceObservationPoint: flowpb.TraceObservationPoint_TO_ENDPOINT,
			IsReply:               wrapperspb.Bool(true), Reply: true,
			Interface: iface,
			Summary:   "TCP Flags: SYN, ACK",
		},
	}, {
		name: "udp over ipv6 to a remote pod",
		ev: evSpec{typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 17, ifindex: 7, epID: 10, srcID: 1000, dstID: 2,
			src: "fd00:1::10", dst: "fd00:9::1", sport: 5353, dport: 53, dir: contract.DirectionEgress, flags: datapath.FlagCTNew},
		want: &flowpb.Flow{
			Verdict:     flowpb.Verdict_FORWARDED,
			IP:          &flowpb.IP{Source: "fd00:1::10", Destination: "fd00:9::1", IpVersion: flowpb.IPVersion_IPv6},
			L4:          &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 5353, DestinationPort: 53}}},
			Source:      webEP(10, 1000),
			Destination: &flowpb.Endpoint{Identity: 2, Labels: []string{"reserved:world"}},
			Type:        flowpb.FlowType_L3_L4, NodeName: "node-1",
			EventType:             &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 5},
			TrafficDirection:      flowpb.TrafficDirection_EGRESS,
			TraceObservationPoint: flowpb.TraceObservationPoint_FROM_ENDPOINT,
			IsReply:               wrapperspb.Bool(false),
			Interface:             iface,
			Summary:               "UDP",
		},
	}, {
		name: "icmpv4 echo request dropped by policy, ingress to a remote-node pod",
		ev: evSpec{typ: contract.MessageTypeDrop, obs: contract.TraceToLxc, verdict: contract.VerdictDropped, dropReason: contract.DropPolicyDenied, proto: 1, icmpType: 8, ifindex: 7, epID: 20,
			srcID: 1001, dstID: 1003, src: "10.0.1.11", dst: "10.0.2.20", dir: contract.DirectionIngress, policyID: 0},
		want: &flowpb.Flow{
			Verdict:        flowpb.Verdict_DROPPED,
			DropReason:     133,
			DropReasonDesc: flowpb.DropReason_POLICY_DENIED,
			IP:             &flowpb.IP{Source: "10.0.1.11", Destination: "10.0.2.20", IpVersion: flowpb.IPVersion_IPv4},
			L4:             &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{ICMPv4: &flowpb.ICMPv4{Type: 8}}},
			Source:         clientEP(0, 1001),
			Destination:    dbEP(20, 1003),
			Type:           flowpb.FlowType_L3_L4, NodeName: "node-1",
			EventType:        &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 133},
			TrafficDirection: flowpb.TrafficDirection_INGRESS,
			Interface:        iface,
			Summary:          "ICMPv4 EchoRequest",
		},
	}, {
		name: "spoofed source dropped (132), from the host",
		ev: evSpec{typ: contract.MessageTypeDrop, obs: contract.TraceFromLxc, verdict: contract.VerdictDropped, dropReason: contract.DropInvalidSourceIP, proto: 17, ifindex: 7, epID: 11, srcID: 1001,
			src: "192.168.200.11", dst: "192.168.200.12", sport: 1, dport: 2, dir: contract.DirectionEgress, flags: datapath.FlagXDP},
		want: &flowpb.Flow{
			Verdict:        flowpb.Verdict_DROPPED,
			DropReason:     132,
			DropReasonDesc: flowpb.DropReason_INVALID_SOURCE_IP,
			IP:             &flowpb.IP{Source: "192.168.200.11", Destination: "192.168.200.12", IpVersion: flowpb.IPVersion_IPv4},
			L4:             &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: 1, DestinationPort: 2}}},
			Source:         &flowpb.Endpoint{ID: 11, Identity: 1001, Labels: []string{"reserved:host"}},
			Destination:    &flowpb.Endpoint{Labels: []string{"reserved:remote-node"}},
			Type:           flowpb.FlowType_L3_L4, NodeName: "node-1",
			EventType:        &flowpb.CiliumEventType{Type: contract.MessageTypeDrop, SubType: 132},
			TrafficDirection: flowpb.TrafficDirection_EGRESS,
			Interface:        iface,
			Summary:          "UDP",
		},
	}, {
		name: "icmpv6 echo reply, policy verdict",
		ev: evSpec{typ: contract.MessageTypePolicyVerdict, obs: contract.TraceToLxc, verdict: contract.VerdictForwarded, proto: 58, icmpType: 129, ifindex: 7, epID: 10, srcID: 1001,
			dstID: 1000, src: "fd00:1::11", dst: "fd00:1::10", dir: contract.DirectionIngress, matchType: 2, policyID: 9},
		want: &flowpb.Flow{
			Verdict:     flowpb.Verdict_FORWARDED,
			IP:          &flowpb.IP{Source: "fd00:1::11", Destination: "fd00:1::10", IpVersion: flowpb.IPVersion_IPv6},
			L4:          &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv6{ICMPv6: &flowpb.ICMPv6{Type: 129}}},
			Source:      clientEP(0, 1001),
			Destination: webEP(10, 1000),
			Type:        flowpb.FlowType_L3_L4, NodeName: "node-1",
			EventType:        &flowpb.CiliumEventType{Type: contract.MessageTypePolicyVerdict},
			TrafficDirection: flowpb.TrafficDirection_INGRESS,
			IsReply:          wrapperspb.Bool(false),
			PolicyMatchType:  2,
			Interface:        iface,
			Summary:          "ICMPv6 EchoReply",
			IngressAllowedBy: []*flowpb.Policy{{Name: "allow-9", Namespace: "x", Kind: "NetworkPolicy"}},
		},
	}}
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	o := newTestObserver(t, 63, nil)
	o.dec.policy = policyFunc(func(id uint32) []*flowpb.Policy {
		return []*flowpb.Policy{{Name: "allow-9", Namespace: "x", Kind: "NetworkPolicy"}}
	})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.ev.ts = 5e9
			e, err := o.dec.Decode(rawEvent(tc.ev))
			if err != nil {
				t.Fatal(err)
			}
			got := proto.Clone(e.flow).(*flowpb.Flow)
			if !uuidRE.MatchString(got.Uuid) {
				t.Errorf("uuid %q is not a v4 UUID", got.Uuid)
			}
			wantTime := time.Unix(0, o.dec.bootOffset+5e9)
			if !got.Time.AsTime().Equal(wantTime) {
				t.Errorf("time = %v, want %v", got.Time.AsTime(), wantTime)
			}
			got.Uuid, got.Time = "", nil
			if !proto.Equal(got, tc.want) {
				t.Errorf("flow mismatch\n got: %s\nwant: %s", protojson.Format(got), protojson.Format(tc.want))
			}
		})
	}
}

type policyFunc func(uint32) []*flowpb.Policy

func (f policyFunc) ResolvePolicy(id uint32) []*flowpb.Policy { return f(id) }

func TestDecodeRejects(t *testing.T) {
	o := newTestObserver(t, 63, nil)
	good := rawEvent(evSpec{typ: contract.MessageTypeTrace, proto: 6, src: "10.0.0.1", dst: "10.0.0.2"})
	bad := func(mut func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		mut(b)
		return b
	}
	for name, raw := range map[string][]byte{
		"short":        good[:100],
		"unknown type": bad(func(b []byte) { b[8] = 77 }),
		"family":       bad(func(b []byte) { b[12] = 5 }),
		"cap_len":      bad(func(b []byte) { b[80] = 200 }),
	} {
		if _, err := o.dec.Decode(raw); err == nil {
			t.Errorf("%s: decoded", name)
		}
		o.HandleEvent(raw)
	}
	if got := o.DecodeErrors(); got != 4 {
		t.Errorf("decode errors = %d, want 4", got)
	}
	if o.ring.len() != 0 {
		t.Errorf("ring holds %d flows from bad records", o.ring.len())
	}
}

func TestDecodeUUIDsDiffer(t *testing.T) {
	o := newTestObserver(t, 63, nil)
	raw := rawEvent(evSpec{typ: contract.MessageTypeTrace, proto: 6, src: "10.0.0.1", dst: "10.0.0.2"})
	seen := map[string]bool{}
	for range 1000 {
		e, err := o.dec.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		if seen[e.flow.Uuid] {
			t.Fatalf("uuid %s repeated", e.flow.Uuid)
		}
		seen[e.flow.Uuid] = true
	}
}

func TestSummaries(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{tcpSummaries[0x11], "TCP Flags: ACK, FIN"},
		{tcpSummaries[0x18], "TCP Flags: ACK, PSH"},
		{tcpSummaries[0x04], "TCP Flags: RST"},
		{icmpSummary(false, 3, 3), "ICMPv4 DestinationUnreachable(Port)"},
		{icmpSummary(false, 3, 99), "ICMPv4 DestinationUnreachable(Code: 99)"},
		{icmpSummary(false, 8, 1), "ICMPv4 EchoRequest(Code: 1)"},
		{icmpSummary(false, 200, 2), "ICMPv4 200(2)"},
		{icmpSummary(true, 1, 4), "ICMPv6 DestinationUnreachable(PortUnreachable)"},
		{icmpSummary(true, 128, 0), "ICMPv6 EchoRequest"},
	} {
		if tc.got != tc.want {
			t.Errorf("summary %q, want %q", tc.got, tc.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(rawEvent(evSpec{typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 6, tcpFlags: 2, src: "10.0.1.11", dst: "10.0.1.10", sport: 1, dport: 80, dir: contract.DirectionEgress}))
	f.Add(rawEvent(evSpec{typ: contract.MessageTypeDrop, verdict: contract.VerdictDropped, dropReason: contract.DropPolicyDenied, proto: 58, src: "fd00::1", dst: "fd00::2", dir: contract.DirectionIngress}))
	f.Add(rawEvent(evSpec{typ: contract.MessageTypePolicyVerdict, proto: 1, icmpType: 3, icmpCode: 200, src: "10.0.2.20", dst: "10.0.1.10"}))
	f.Add([]byte{})
	f.Add(kernelRecord(testNetnsPod, "10.0.2.20", "10.0.1.10", 17, 1, 9))
	f.Add(kernelRecord(testNetnsOther, "", "", 0, 0, 0))
	f.Add(tcpRecord(testNetnsPod, datapath.FlagTCPRetransmit, contract.DirectionEgress, "10.0.1.10", "10.0.2.20", 40000, 5432))
	f.Add(tcpRecord(testNetnsNode, datapath.FlagTCPReset, contract.DirectionIngress, "fd00::1", "fd00::2", 9, 40000))
	f.Add(datapath.MustEncodeEvent(&datapath.Event{Type: contract.MessageTypeTrace, Flags: datapath.FlagTCPReset, NetnsIno: testNetnsPod}))
	o := newKernelTestObserver(f)
	f.Fuzz(func(t *testing.T, raw []byte) {
		counted := func() uint64 {
			return o.DecodeErrors() + o.SeenFlows() + uint64(counterValue(o.kdrops.others))
		}
		before := counted()
		o.HandleEvent(raw)
		// Every record is a flow, a counted decode error or a counted
		// kernel event of another node.
		if after := counted(); after != before+1 {
			t.Fatalf("record neither stored nor counted")
		}
		if _, err := o.dec.Decode(raw); err == nil {
			head := o.ring.head.Load()
			e, _ := o.ring.read(head - 1)
			kernel := KernelDropOf(e.flow) != nil || TCPEventOf(e.flow) != nil
			if e == nil || (e.flow.IP == nil && !kernel) || e.flow.EventType == nil {
				t.Fatal("flow without IP or event type")
			}
		}
	})
}

// flowAddrs, which the connection metrics key connections by, says what
// the flow's IP layer says; a flow without one has none.
func TestFlowAddrsMatchIPStrings(t *testing.T) {
	o := newTestObserver(t, 4095, nil)
	evs := append(benchEvents(), rawEvent(evSpec{ts: 1e9, typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 6,
		flags: 2, epID: 11, srcID: 1001, dstID: 1000, src: "fd00::11", dst: "fd00::10", sport: 4242, dport: 80, dir: contract.DirectionEgress}))
	withIP := 0
	for i, raw := range evs {
		e, err := o.dec.Decode(raw)
		if err != nil {
			t.Fatal(err)
		}
		src, dst := o.dec.flowAddrs(e.flow)
		ip := e.flow.GetIP()
		if ip == nil {
			if src.IsValid() || dst.IsValid() {
				t.Fatalf("event %d: no IP layer, addresses %v %v", i, src, dst)
			}
			continue
		}
		withIP++
		if ws, wd := netip.MustParseAddr(ip.GetSource()), netip.MustParseAddr(ip.GetDestination()); ws != src || wd != dst {
			t.Fatalf("event %d: addresses %v %v, the flow says %v %v", i, src, dst, ws, wd)
		}
	}
	if withIP == 0 {
		t.Fatal("no event had an IP layer")
	}
}
