package observer

import (
	"net/netip"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// tcpRecord is a record as bpf/tcp.c writes it (datapath's
// TestPrivilegedTCPResetClosedPort and TestPrivilegedTCPRetransmitMatchesSS
// read the same from the real tracepoints, and test/e2e's
// TestPrivilegedLabTCPHealth follows them into loupe observe).
func tcpRecord(netns uint64, flags, dir uint8, src, dst string, sport, dport uint16) []byte {
	ev := &datapath.Event{Type: contract.MessageTypeTrace, Verdict: contract.VerdictForwarded, Flags: flags, Direction: dir,
		Proto: 6, SrcPort: sport, DstPort: dport, NetnsIno: netns, TimestampNS: 5,
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst)}
	switch flags {
	case datapath.FlagTCPRetransmit:
		ev.PacketsFwd, ev.BytesFwd, ev.PacketsRev, ev.TCPFlags = 2, 2896, 17, 0x10
	case datapath.FlagTCPReset:
		ev.TCPFlags = 0x04
		if dir == contract.DirectionEgress {
			ev.KernelReason = 1
		}
	}
	return datapath.MustEncodeEvent(ev)
}

func TestTCPEventFlows(t *testing.T) {
	for _, tc := range []struct {
		name, event       string
		raw               []byte
		obs               flowpb.TraceObservationPoint
		dir               flowpb.TrafficDirection
		srcPod, dstPod    string
		summary           string
		metric            []string
		metricRetransmits bool
	}{
		{"retransmit from the pod", contract.TCPEventRetransmit,
			tcpRecord(testNetnsPod, datapath.FlagTCPRetransmit, contract.DirectionEgress, "10.0.1.10", "10.0.2.20", 40000, 5432),
			flowpb.TraceObservationPoint_FROM_STACK, flowpb.TrafficDirection_EGRESS, "web-5d8f7c6b9-abcde", "db-0",
			"TCP retransmission of 2 ACK segment(s), 17 on the connection", nil, true},
		{"reset sent by the pod", contract.TCPEventResetSent,
			tcpRecord(testNetnsPod, datapath.FlagTCPReset, contract.DirectionEgress, "10.0.1.10", "10.0.2.20", 9, 40000),
			flowpb.TraceObservationPoint_FROM_STACK, flowpb.TrafficDirection_EGRESS, "web-5d8f7c6b9-abcde", "db-0",
			"TCP reset sent, SK_RST_REASON_NO_SOCKET", []string{"sent", "NO_SOCKET"}, false},
		{"reset received by the pod", contract.TCPEventResetReceived,
			tcpRecord(testNetnsPod, datapath.FlagTCPReset, contract.DirectionIngress, "10.0.2.20", "10.0.1.10", 9, 40000),
			flowpb.TraceObservationPoint_TO_STACK, flowpb.TrafficDirection_INGRESS, "db-0", "web-5d8f7c6b9-abcde",
			"TCP reset received", []string{"received", ""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newKernelTestObserver(t)
			o.HandleEvent(tc.raw)
			if o.SeenFlows() != 1 || o.DecodeErrors() != 0 {
				t.Fatalf("%d flows, %d decode errors", o.SeenFlows(), o.DecodeErrors())
			}
			f := lastFlow(t, o)
			if f.Verdict != flowpb.Verdict_FORWARDED || f.EventType.GetType() != contract.MessageTypeTrace ||
				f.TraceObservationPoint != tc.obs || f.TrafficDirection != tc.dir {
				t.Errorf("verdict %s, event type %v, point %s, direction %s", f.Verdict, f.EventType, f.TraceObservationPoint, f.TrafficDirection)
			}
			if f.GetSource().GetPodName() != tc.srcPod || f.GetDestination().GetPodName() != tc.dstPod {
				t.Errorf("source %q destination %q", f.GetSource().GetPodName(), f.GetDestination().GetPodName())
			}
			if f.GetL4().GetTCP() == nil || f.GetL4().GetTCP().GetFlags() != nil {
				t.Errorf("l4 %v: want TCP ports without flags", f.GetL4())
			}
			if f.Summary != tc.summary {
				t.Errorf("summary %q, want %q", f.Summary, tc.summary)
			}
			x := TCPEventOf(f)
			if x[contract.ExtTCPEvent].GetStringValue() != tc.event || x[contract.ExtTCPAttributedBy].GetStringValue() != AttributedNetns ||
				x[contract.ExtTCPNetnsInode].GetNumberValue() != testNetnsPod {
				t.Errorf("tcp extension %v", x)
			}
			if KernelDropOf(f) != nil {
				t.Error("a TCP event reads as a kernel drop")
			}
			b, err := protojson.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			if !containsAll(string(b), `"tcp"`, `"event":"`+tc.event+`"`, `"@type":"type.googleapis.com/google.protobuf.Struct"`) {
				t.Errorf("json %s", b)
			}
			sns, sw := workloadOf(f.GetSource())
			dns, dw := workloadOf(f.GetDestination())
			if tc.metricRetransmits {
				if x[contract.ExtTCPConnRetrans].GetNumberValue() != 17 || x[contract.ExtTCPSegments].GetNumberValue() != 2 {
					t.Errorf("retransmit counts %v", x)
				}
				if got := counterValue(o.tcp.retransmits.WithLabelValues(sns, sw, dns, dw)); got != 2 {
					t.Errorf("loupe_tcp_retransmits_total{%s/%s -> %s/%s} = %v, want 2", sns, sw, dns, dw, got)
				}
			} else if got := counterValue(o.tcp.resets.WithLabelValues(sns, sw, dns, dw, tc.metric[0], tc.metric[1])); got != 1 {
				t.Errorf("loupe_tcp_resets_total{%s/%s -> %s/%s, %v} = %v, want 1", sns, sw, dns, dw, tc.metric, got)
			}
			if sw == "" || dw == "" || sw == dw {
				t.Errorf("workload labels %q %q", sw, dw)
			}
		})
	}
}

// A TCP event in another node's namespace is left to that node's agent.
func TestTCPEventsOfOthersNotReported(t *testing.T) {
	o := newKernelTestObserver(t)
	o.HandleEvent(tcpRecord(testNetnsOther, datapath.FlagTCPRetransmit, contract.DirectionEgress, "10.0.2.20", "10.0.1.10", 1, 9))
	o.HandleEvent(tcpRecord(0, datapath.FlagTCPReset, contract.DirectionEgress, "10.0.2.20", "10.0.1.10", 1, 9))
	if o.SeenFlows() != 0 || o.DecodeErrors() != 0 {
		t.Errorf("%d flows, %d decode errors; want none", o.SeenFlows(), o.DecodeErrors())
	}
	if n := counterValue(o.kdrops.others); n != 2 {
		t.Errorf("not reported: %v, want 2", n)
	}
}

// A TCP event of the node's own connections (no pod at either end) is not
// a pod's health: it is counted, not reported. One of a pod's connection
// seen in the node's namespace is the pod's, by address.
func TestTCPEventsOfTheNodeNotReported(t *testing.T) {
	o := newKernelTestObserver(t)
	o.HandleEvent(tcpRecord(testNetnsNode, datapath.FlagTCPRetransmit, contract.DirectionEgress, "192.0.2.1", "192.0.2.2", 4244, 40000))
	if o.SeenFlows() != 0 || counterValue(o.kdrops.others) != 1 {
		t.Errorf("%d flows, %v not reported; want 0 and 1", o.SeenFlows(), counterValue(o.kdrops.others))
	}
	o.HandleEvent(tcpRecord(testNetnsNode, datapath.FlagTCPRetransmit, contract.DirectionEgress, "192.0.2.1", "10.0.1.11", 4244, 40000))
	if o.SeenFlows() != 1 {
		t.Fatalf("%d flows, want the pod's by address", o.SeenFlows())
	}
	if by := TCPEventOf(lastFlow(t, o))[contract.ExtTCPAttributedBy].GetStringValue(); by != AttributedAddress {
		t.Errorf("attributed_by %q", by)
	}
}
