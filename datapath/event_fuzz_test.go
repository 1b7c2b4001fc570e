package datapath

import (
	"encoding/binary"
	"errors"
	"testing"
)

// seedEvent builds a well-formed record as the datapath writes it.
func seedEvent(family uint8, capLen uint32) []byte {
	b := make([]byte, EventSize)
	le := binary.LittleEndian
	le.PutUint64(b[0:], 123456789)
	b[8], b[9], b[10], b[11] = EventTrace, ObsFromEndpoint, VerdictForwarded, 0
	b[12], b[13], b[14], b[15] = family, 6, 0x02, FlagCTNew
	le.PutUint32(b[16:], 5)
	le.PutUint32(b[20:], 42)
	copy(b[32:], []byte{10, 0, 0, 2})
	copy(b[48:], []byte{10, 0, 0, 3})
	le.PutUint16(b[64:], 40000)
	le.PutUint16(b[66:], 80)
	b[71] = DirEgress
	le.PutUint32(b[76:], 74)
	le.PutUint32(b[80:], capLen)
	le.PutUint64(b[88:], 1)
	for i := range EventDataLen {
		b[120+i] = byte(i)
	}
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

func FuzzDecodeEvent(f *testing.F) {
	f.Add(seedEvent(4, 74))
	f.Add(seedEvent(6, EventDataLen))
	f.Add(seedEvent(6, 0))
	f.Add(seedEvent(4, 0xffffffff))
	f.Add(seedEvent(0, 10))
	f.Add(seedEvent(4, 10)[:100])
	f.Add(append(seedEvent(4, 20), 1, 2, 3))
	f.Add([]byte{})
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
		default:
			t.Fatalf("accepted family %d", ev.Family)
		}
		if len(ev.Data) > 0 && &ev.Data[0] != &b[120] {
			t.Fatal("data does not alias the record")
		}
	})
}
