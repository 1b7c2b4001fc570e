package observer

import (
	"net/netip"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// Namespace inodes of the fake kernel: the node's, pod x/web's, another
// node's.
const (
	testNetnsNode  = 4026531840
	testNetnsPod   = 4026532001
	testNetnsOther = 4026532999
)

// fakeKernel stands in for the agent's KernelEvents; its rule is
// contract.ReportsNetns, as the agent's.
type fakeKernel struct{}

func (fakeKernel) Netns(inum uint64) (bool, *NetnsEndpoint) {
	pod := &NetnsEndpoint{ID: 7, Identity: 1234, IPv4: netip.MustParseAddr("10.0.1.10"), IPv6: netip.MustParseAddr("fd00:1::10")}
	report := contract.ReportsNetns(inum, testNetnsNode, func(i uint64) bool { return i == testNetnsPod })
	if report && inum == testNetnsPod {
		return true, pod
	}
	return report, nil
}

func (fakeKernel) DropReason(code uint32) string {
	return map[uint32]string{2: "SKB_DROP_REASON_NO_SOCKET", 6: "SKB_DROP_REASON_NETFILTER_DROP"}[code]
}

func (fakeKernel) Function(addr uint64) string {
	switch addr {
	case 0xffffffff81001234:
		return "__udp4_lib_rcv"
	case 0xffffffff81005678:
		return pingRcv
	}
	return ""
}

func (fakeKernel) Identity(a netip.Addr) uint32 {
	if a == netip.MustParseAddr("10.0.2.20") {
		return 5678
	}
	return 0
}

func newKernelTestObserver(t testing.TB) *Observer {
	o := newTestObserver(t, 63, nil)
	o.dec.kernel = fakeKernel{}
	return o
}

// kernelRecord is a record as bpf/kdrop.c writes it (the privileged test
// TestPrivilegedKernelDropNoSocket reads one from the real tracepoint).
func kernelRecord(netns uint64, src, dst string, proto uint8, sport, dport uint16) []byte {
	ev := &datapath.Event{Type: contract.MessageTypeDrop, Verdict: contract.VerdictDropped, Flags: datapath.FlagKernel,
		Proto: proto, SrcPort: sport, DstPort: dport, KernelReason: 2, NetnsIno: netns, Location: 0xffffffff81001234, TimestampNS: 5}
	if src != "" {
		ev.Src, ev.Dst = netip.MustParseAddr(src), netip.MustParseAddr(dst)
	}
	return datapath.MustEncodeEvent(ev)
}

func lastFlow(t *testing.T, o *Observer) *flowpb.Flow {
	t.Helper()
	e, _ := o.ring.read(o.ring.head.Load() - 1)
	if e == nil || e.flow == nil {
		t.Fatal("no flow")
	}
	return e.flow
}

func TestKernelDropFlows(t *testing.T) {
	for _, tc := range []struct {
		name       string
		raw        []byte
		attributed string
		dir        flowpb.TrafficDirection
		srcPod     string
		dstPod     string
	}{
		{"in the pod's namespace, to it", kernelRecord(testNetnsPod, "10.0.2.20", "10.0.1.10", 17, 5000, 9),
			AttributedNetns, flowpb.TrafficDirection_INGRESS, "db-0", "web-5d8f7c6b9-abcde"},
		{"in the pod's namespace, from it", kernelRecord(testNetnsPod, "10.0.1.10", "10.0.2.20", 17, 5000, 9),
			AttributedNetns, flowpb.TrafficDirection_EGRESS, "web-5d8f7c6b9-abcde", "db-0"},
		{"loopback in the pod", kernelRecord(testNetnsPod, "127.0.0.1", "127.0.0.1", 17, 5000, 9),
			AttributedNetns, flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN, "web-5d8f7c6b9-abcde", "web-5d8f7c6b9-abcde"},
		{"node's namespace, a pod by address", kernelRecord(testNetnsNode, "192.0.2.1", "10.0.1.11", 6, 5000, 80),
			AttributedAddress, flowpb.TrafficDirection_INGRESS, "", "b"},
		{"node's namespace, no pod", kernelRecord(testNetnsNode, "192.0.2.1", "192.0.2.2", 6, 5000, 80),
			AttributedNone, flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN, "", ""},
		{"no headers", kernelRecord(testNetnsPod, "", "", 0, 0, 0),
			AttributedNetns, flowpb.TrafficDirection_TRAFFIC_DIRECTION_UNKNOWN, "web-5d8f7c6b9-abcde", "web-5d8f7c6b9-abcde"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newKernelTestObserver(t)
			o.HandleEvent(tc.raw)
			if o.SeenFlows() != 1 || o.DecodeErrors() != 0 {
				t.Fatalf("%d flows, %d decode errors", o.SeenFlows(), o.DecodeErrors())
			}
			f := lastFlow(t, o)
			if f.Verdict != flowpb.Verdict_DROPPED || f.EventType.GetType() != contract.MessageTypeDrop || f.DropReasonDesc != flowpb.DropReason_DROP_REASON_UNKNOWN {
				t.Errorf("verdict %s, event type %v, drop reason %s", f.Verdict, f.EventType, f.DropReasonDesc)
			}
			if f.TrafficDirection != tc.dir {
				t.Errorf("direction %s, want %s", f.TrafficDirection, tc.dir)
			}
			if got := f.GetSource().GetPodName(); got != tc.srcPod {
				t.Errorf("source pod %q, want %q", got, tc.srcPod)
			}
			if got := f.GetDestination().GetPodName(); got != tc.dstPod {
				t.Errorf("destination pod %q, want %q", got, tc.dstPod)
			}
			// The pod's identity comes from its endpoint, the peer's from
			// the ipcache.
			for _, e := range []*flowpb.Endpoint{f.GetSource(), f.GetDestination()} {
				want := map[string]uint32{"web-5d8f7c6b9-abcde": 1234, "db-0": 5678}[e.GetPodName()]
				if tc.attributed == AttributedNetns && want != 0 && e.GetIdentity() != want {
					t.Errorf("%s identity %d, want %d", e.GetPodName(), e.GetIdentity(), want)
				}
			}
			if !strings.HasSuffix(f.Summary, "; kernel drop SKB_DROP_REASON_NO_SOCKET in __udp4_lib_rcv") {
				t.Errorf("summary %q", f.Summary)
			}
			kd := KernelDropOf(f)
			if kd[ExtKernelReason].GetStringValue() != "SKB_DROP_REASON_NO_SOCKET" || kd[ExtKernelFunction].GetStringValue() != "__udp4_lib_rcv" ||
				kd[ExtKernelReasonCode].GetNumberValue() != 2 || kd[ExtKernelAttributedBy].GetStringValue() != tc.attributed {
				t.Errorf("kernel_drop %v", kd)
			}
			// The JSON hubble prints carries the extension as a Struct.
			b, err := protojson.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			if !containsAll(string(b), `"kernel_drop"`, `"SKB_DROP_REASON_NO_SOCKET"`, `"@type":"type.googleapis.com/google.protobuf.Struct"`) {
				t.Errorf("json %s", b)
			}
			if got := counterValue(o.kdrops.drops.WithLabelValues("NO_SOCKET", tc.attributed)); got != 1 {
				t.Errorf("loupe_kernel_drops_total{NO_SOCKET,%s} = %v", tc.attributed, got)
			}
		})
	}
}

// A drop in another node's namespace, or in none, is this agent's to skip
// and count, not a flow nor a decode error; without KernelEvents every
// kernel record is.
func TestKernelDropsOfOthersNotReported(t *testing.T) {
	o := newKernelTestObserver(t)
	o.HandleEvent(kernelRecord(testNetnsOther, "10.0.2.20", "10.0.1.10", 17, 1, 9))
	o.HandleEvent(kernelRecord(0, "10.0.2.20", "10.0.1.10", 17, 1, 9))
	plain := newTestObserver(t, 63, nil)
	plain.HandleEvent(kernelRecord(testNetnsPod, "10.0.2.20", "10.0.1.10", 17, 1, 9))
	for _, o := range []*Observer{o, plain} {
		if o.SeenFlows() != 0 || o.DecodeErrors() != 0 {
			t.Errorf("%d flows, %d decode errors; want none", o.SeenFlows(), o.DecodeErrors())
		}
	}
	if n := counterValue(o.kdrops.others); n != 2 {
		t.Errorf("not reported: %v, want 2", n)
	}
}

// TestKernelDropsOfEchoRepliesNotReported: ping_rcv frees each echo reply
// no ping socket claims, also when ping's raw socket had it; those are not
// drops of a pod's traffic.
func TestKernelDropsOfEchoRepliesNotReported(t *testing.T) {
	o := newKernelTestObserver(t)
	ev := &datapath.Event{Type: contract.MessageTypeDrop, Verdict: contract.VerdictDropped, Flags: datapath.FlagKernel,
		Proto: 1, KernelReason: 2, NetnsIno: testNetnsPod, Location: 0xffffffff81005678, TimestampNS: 5,
		Src: netip.MustParseAddr("10.0.2.20"), Dst: netip.MustParseAddr("10.0.1.10")}
	o.HandleEvent(datapath.MustEncodeEvent(ev))
	if o.SeenFlows() != 0 || counterValue(o.kdrops.others) != 1 {
		t.Fatalf("%d flows, %v not reported; want 0 and 1", o.SeenFlows(), counterValue(o.kdrops.others))
	}
	ev.Location = 0xffffffff81001234 // the same drop elsewhere is reported
	o.HandleEvent(datapath.MustEncodeEvent(ev))
	if o.SeenFlows() != 1 {
		t.Fatalf("%d flows, want 1", o.SeenFlows())
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}

// BenchmarkHandleKernelDrop is the observer's cost per kernel drop it
// reports (the agent sees at most --kernel-drop-events-per-second of them),
// and per one it leaves to another agent.
func BenchmarkHandleKernelDrop(b *testing.B) {
	o := newKernelTestObserver(b)
	ours := kernelRecord(testNetnsPod, "10.0.2.20", "10.0.1.10", 17, 5000, 9)
	others := kernelRecord(testNetnsOther, "10.0.2.20", "10.0.1.10", 17, 5000, 9)
	b.Run("reported", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			o.HandleEvent(ours)
		}
	})
	b.Run("not_reported", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			o.HandleEvent(others)
		}
	})
}

func (fakeKernel) ResetReason(code uint32) string {
	return map[uint32]string{1: "SK_RST_REASON_NO_SOCKET"}[code]
}
