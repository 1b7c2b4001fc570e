package datapath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/loupe-project/loupe/contract"
)

// seedEvent builds a well-formed record as the datapath writes it, then
// sets its family and capture length bytes as given, so that seeds can
// also be malformed.
func seedEvent(family uint8, capLen uint32) []byte {
	data := make([]byte, EventDataLen)
	for i := range data {
		data[i] = byte(i)
	}
	src, dst := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	if family == 6 {
		src, dst = netip.MustParseAddr("fd00::2"), netip.MustParseAddr("fd00::3")
	}
	b := MustEncodeEvent(&Event{
		TimestampNS: 123456789, Type: contract.MessageTypeTrace, ObsPoint: contract.TraceFromLxc,
		Verdict: contract.VerdictForwarded, Proto: 6, TCPFlags: 0x02, Flags: FlagCTNew,
		Ifindex: 5, EndpointID: 42, Src: src, Dst: dst, SrcPort: 40000, DstPort: 80,
		Direction: contract.DirectionEgress, PacketLen: 74, PacketsFwd: 1, Data: data,
	})
	b[offFamily] = family
	binary.LittleEndian.PutUint32(b[offCapLen:], capLen)
	return b
}

func TestDecodeEvent(t *testing.T) {
	var ev Event
	if err := DecodeEvent(seedEvent(4, 74), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Src.String() != "10.0.0.2" || ev.DstPort != 80 || ev.EndpointID != 42 || len(ev.Data) != 74 || ev.PacketsFwd != 1 {
		t.Fatalf("decoded %+v", ev)
	}
	if err := DecodeEvent(seedEvent(4, 74)[:EventSize-1], &ev); !errors.Is(err, ErrShortEvent) {
		t.Fatalf("short record: %v", err)
	}
	if err := DecodeEvent(seedEvent(5, 0), &ev); err == nil {
		t.Fatal("unknown family accepted")
	}
	if err := DecodeEvent(seedEvent(6, EventDataLen+1), &ev); err == nil {
		t.Fatal("oversized capture accepted")
	}
}

func TestEncodeEventRejects(t *testing.T) {
	v4, v6 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("fd00::1")
	for name, ev := range map[string]*Event{
		"no address":     {},
		"mixed families": {Src: v4, Dst: v6},
		"long data":      {Src: v4, Dst: v4, Data: make([]byte, EventDataLen+1)},
	} {
		if _, err := EncodeEvent(ev); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecodeEvent checks that the decoder accepts only what the datapath
// can write, never reads past the record, and agrees with EncodeEvent:
// what it decodes encodes back to a record that decodes the same.
func FuzzDecodeEvent(f *testing.F) {
	f.Add(seedEvent(4, 74))
	f.Add(seedEvent(6, EventDataLen))
	f.Add(seedEvent(6, 0))
	f.Add(seedEvent(4, 0xffffffff))
	f.Add(seedEvent(0, 10))
	f.Add(seedEvent(4, 10)[:100])
	f.Add(append(seedEvent(4, 20), 1, 2, 3))
	f.Add([]byte{})
	f.Add(MustEncodeEvent(&Event{Flags: FlagKernel, KernelReason: 2, NetnsIno: 4026532000, Location: 0xffffffff81000000}))
	f.Add(MustEncodeEvent(&Event{Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Proto: 6, TCPFlags: 0x12,
		Flags: FlagReply, PacketsFwd: 1, BytesFwd: 74, PacketsRev: 1, BytesRev: 74, HandshakeNS: 84000}))
	f.Add(MustEncodeEvent(&Event{Flags: FlagTCPReset, Direction: contract.DirectionEgress, KernelReason: 1, NetnsIno: 4026532000}))
	f.Add(MustEncodeEvent(&Event{Type: contract.MessageTypeTrace, Flags: FlagTCPRetransmit, Proto: 6, NetnsIno: 4026532000,
		Src: netip.MustParseAddr("::ffff:10.0.0.2"), Dst: netip.MustParseAddr("::ffff:10.0.0.3"), PacketsFwd: 2, PacketsRev: 7}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		if err := DecodeEvent(b, &ev); err != nil {
			return
		}
		if len(b) < EventSize {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if len(ev.Data) > EventDataLen {
			t.Fatalf("data of %d bytes", len(ev.Data))
		}
		switch ev.Family {
		case 4:
			if !ev.Src.Is4() || !ev.Dst.Is4() {
				t.Fatalf("family 4 with %s %s", ev.Src, ev.Dst)
			}
		case 6:
			if !ev.Src.Is6() || !ev.Dst.Is6() {
				t.Fatalf("family 6 with %s %s", ev.Src, ev.Dst)
			}
		case 0:
			if ev.Flags&flagsTracepoint == 0 || ev.Src.IsValid() || ev.Dst.IsValid() {
				t.Fatalf("family 0 with flags %#x, %s %s", ev.Flags, ev.Src, ev.Dst)
			}
		default:
			t.Fatalf("accepted family %d", ev.Family)
		}
		if len(ev.Data) > 0 && &ev.Data[0] != &b[offData] {
			t.Fatal("data does not alias the record")
		}
		if cap(ev.Data) != len(ev.Data) {
			t.Fatalf("data of %d bytes can reach %d", len(ev.Data), cap(ev.Data))
		}
		enc, err := EncodeEvent(&ev)
		if err != nil {
			t.Fatalf("a decoded record does not encode: %v", err)
		}
		var again Event
		if err := DecodeEvent(enc, &again); err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !bytes.Equal(again.Data, ev.Data) {
			t.Fatal("data changed through encode")
		}
		again.Data, ev.Data = nil, nil
		if !reflect.DeepEqual(again, ev) {
			t.Fatalf("round trip changed the record:\n%+v\n%+v", ev, again)
		}
	})
}

// TestDecodeTCPEventUnmaps checks that a dual-stack socket's IPv4
// connection is named by its IPv4 addresses, as the packet programs see it.
func TestDecodeTCPEventUnmaps(t *testing.T) {
	b := MustEncodeEvent(&Event{Flags: FlagTCPRetransmit, Proto: 6, NetnsIno: 1,
		Src: netip.MustParseAddr("::ffff:10.0.0.2"), Dst: netip.MustParseAddr("::ffff:10.0.0.3")})
	var ev Event
	if err := DecodeEvent(b, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Family != 4 || ev.Src.String() != "10.0.0.2" || ev.Dst.String() != "10.0.0.3" {
		t.Fatalf("decoded %d %s %s", ev.Family, ev.Src, ev.Dst)
	}
	// A packet program's record keeps what it wrote.
	b = MustEncodeEvent(&Event{Proto: 6, Src: netip.MustParseAddr("::ffff:10.0.0.2"), Dst: netip.MustParseAddr("::ffff:10.0.0.3")})
	if err := DecodeEvent(b, &ev); err != nil || ev.Family != 6 {
		t.Fatalf("packet record: family %d, %v", ev.Family, err)
	}
}
