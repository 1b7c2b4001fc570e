package observer

import (
	"net/netip"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// connEvent is a FIN of connection 10.0.1.11:40000 -> 10.0.1.10:80 as one
// veth saw it. TestPrivilegedLabConnectionBytes gets the same from the
// real datapath.
func connEvent(dir uint8, reply bool, srcID, dstID uint32) *datapath.Event {
	ev := &datapath.Event{
		Type: contract.MessageTypeTrace, Verdict: contract.VerdictForwarded, Proto: 6, TCPFlags: 0x11,
		Ifindex: 7, EndpointID: 11, SrcIdentity: srcID, DstIdentity: dstID,
		Src: netip.MustParseAddr("10.0.1.11"), Dst: netip.MustParseAddr("10.0.1.10"), SrcPort: 40000, DstPort: 80,
		Direction: dir, PacketLen: 66,
		PacketsFwd: 70, BytesFwd: 1_000_000, PacketsRev: 40, BytesRev: 2_640, HandshakeNS: 84_000,
	}
	if reply {
		ev.Flags = datapath.FlagReply
		ev.Src, ev.Dst, ev.SrcPort, ev.DstPort = ev.Dst, ev.Src, ev.DstPort, ev.SrcPort
	}
	return ev
}

func decodeOne(t *testing.T, ev *datapath.Event) *flowpb.Flow {
	t.Helper()
	d := NewDecoder("node-1", metadata.Static{Snap: testSnapshot(t)}, nil, func(uint32) string { return "lxc" })
	f, err := d.DecodeFlow(datapath.MustEncodeEvent(ev))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func num(m map[string]*structpb.Value, k string) float64 { return m[k].GetNumberValue() }

func TestConnectionExtension(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ev     *datapath.Event
		wantAt string // "" = no extension
	}{
		{"client veth, client's FIN", connEvent(contract.DirectionEgress, false, 1001, 1000), contract.ObservedAtClient},
		{"client veth, server's FIN", connEvent(contract.DirectionIngress, true, 1000, 1001), contract.ObservedAtClient},
		{"server veth, client is a pod", connEvent(contract.DirectionIngress, false, 1001, 1000), ""},
		{"server veth, reply, client is a pod", connEvent(contract.DirectionEgress, true, 1000, 1001), ""},
		{"server veth, client is a pod without labels yet", connEvent(contract.DirectionIngress, false, contract.IdentityInit, 1000), ""},
		{"server veth, client is world", connEvent(contract.DirectionIngress, false, contract.IdentityWorld, 1000), contract.ObservedAtServer},
		{"server veth, client is the host", connEvent(contract.DirectionEgress, true, 1000, contract.IdentityHost), contract.ObservedAtServer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := decodeOne(t, tc.ev)
			c := contract.Connection(f)
			if tc.wantAt == "" {
				if c != nil {
					t.Fatalf("reported on the wrong veth: %v", c)
				}
				return
			}
			if c == nil {
				t.Fatal("no connection extension")
			}
			// Sent is the client's direction, whichever way this packet went.
			if num(c, contract.ExtConnPacketsSent) != 70 || num(c, contract.ExtConnBytesSent) != 1_000_000 ||
				num(c, contract.ExtConnPacketsReceived) != 40 || num(c, contract.ExtConnBytesReceived) != 2_640 ||
				num(c, contract.ExtConnHandshakeNS) != 84_000 || c[contract.ExtConnObservedAt].GetStringValue() != tc.wantAt {
				t.Errorf("extension %v", c)
			}
		})
	}
}

func TestConnectionExtensionAbsent(t *testing.T) {
	ev := connEvent(contract.DirectionEgress, false, 1001, 1000)
	ev.HandshakeNS = 0
	if c := contract.Connection(decodeOne(t, ev)); c == nil || c[contract.ExtConnHandshakeNS] != nil {
		t.Errorf("untimed connection: %v", c)
	}
	// Counters off in the datapath (or a drop): no extension.
	ev.PacketsFwd, ev.BytesFwd = 0, 0
	if f := decodeOne(t, ev); f.Extensions != nil {
		t.Errorf("extension without counters: %v", f.Extensions)
	}
}

// TestExtensionsCoexist: features share the one Struct, each under its key,
// and the stock JSON form (what hubble observe -o json prints) shows both.
func TestExtensionsCoexist(t *testing.T) {
	f := decodeOne(t, connEvent(contract.DirectionEgress, false, 1001, 1000))
	setExtension(f, contract.ExtKernelDrop, &structpb.Struct{Fields: map[string]*structpb.Value{
		contract.ExtKernelReason: structpb.NewStringValue("SKB_DROP_REASON_NO_SOCKET"),
	}})
	if contract.Connection(f) == nil || contract.KernelDrop(f) == nil {
		t.Fatalf("one key lost: %v", f.Extensions)
	}
	b, err := protojson.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var back flowpb.Flow
	if err := protojson.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if c := contract.Connection(&back); num(c, contract.ExtConnBytesSent) != 1_000_000 {
		t.Errorf("after JSON: %s", b)
	}
}
