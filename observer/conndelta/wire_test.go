package conndelta

import (
	"math"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
)

// extensionBytes is the wire form of a Struct extension holding fields.
func extensionBytes(t testing.TB, fields map[string]any) []byte {
	t.Helper()
	s, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func connFields(ps, bs, pr, br float64, handshake any) map[string]any {
	c := map[string]any{contract.ExtConnPacketsSent: ps, contract.ExtConnBytesSent: bs,
		contract.ExtConnPacketsReceived: pr, contract.ExtConnBytesReceived: br, contract.ExtConnObservedAt: contract.ObservedAtClient}
	if handshake != nil {
		c[contract.ExtConnHandshakeNS] = handshake
	}
	return c
}

// wireSeeds are extensions as loupe's flows carry them, and the shapes
// around them that the wire reader must get right or leave alone.
func wireSeeds(t testing.TB) [][]byte {
	entry := func(key string, val []byte) []byte {
		var e []byte
		e = protowire.AppendTag(e, entryKey, protowire.BytesType)
		e = protowire.AppendString(e, key)
		e = protowire.AppendTag(e, entryValue, protowire.BytesType)
		e = protowire.AppendBytes(e, val)
		b := protowire.AppendTag(nil, structFields, protowire.BytesType)
		return protowire.AppendBytes(b, e)
	}
	number := func(f float64) []byte {
		return protowire.AppendFixed64(protowire.AppendTag(nil, valueNumber, protowire.Fixed64Type), math.Float64bits(f))
	}
	structVal := func(inner []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, valueStruct, protowire.BytesType), inner)
	}
	dup := append(entry(contract.ExtConnection, structVal(entry(contract.ExtConnBytesSent, number(5)))),
		entry(contract.ExtConnection, structVal(entry(contract.ExtConnPacketsSent, number(7))))...)
	return [][]byte{
		extensionBytes(t, map[string]any{contract.ExtConnection: connFields(12, 104857600, 8, 520, 84000.0)}),
		extensionBytes(t, map[string]any{contract.ExtConnection: connFields(1, 60, 0, 0, nil)}),
		extensionBytes(t, map[string]any{"tcp": map[string]any{"rtt": 3.0, "flags": []any{"SYN", 1.0, nil, true, map[string]any{"x": "y"}}},
			contract.ExtConnection: connFields(1e300, -1, math.MaxUint32, 0.5, "late")}),
		extensionBytes(t, map[string]any{"kernel_drop": map[string]any{"reason": "NO_SOCKET"}}),
		extensionBytes(t, map[string]any{contract.ExtConnection: map[string]any{}}),
		extensionBytes(t, map[string]any{contract.ExtConnection: "not a struct"}),
		dup,
		entry(contract.ExtConnection, structVal(entry(contract.ExtConnBytesSent, append(number(1), number(2)...)))),
		entry(contract.ExtConnection, structVal(entry("\xff", number(1)))),
		nil,
	}
}

// The wire reader agrees with the generic unmarshal on every input it
// calls clean, and calls loupe's own extensions clean (else it would
// never spare the relay anything).
func TestTotalsFromWireMatchesStruct(t *testing.T) {
	for i, b := range wireSeeds(t) {
		checkTotals(t, b)
		if _, _, clean := totalsFromWire(b); i < 7 && !clean {
			t.Errorf("seed %d: loupe's own extension shape left to the generic path", i)
		}
	}
}

func checkTotals(t *testing.T, b []byte) {
	t.Helper()
	f := &flowpb.Flow{Extensions: &anypb.Any{TypeUrl: structTypeURL, Value: b}}
	want, wantOK := totalsOfStruct(f)
	got, ok, clean := totalsFromWire(b)
	if !clean {
		return
	}
	if ok != wantOK || got != want {
		t.Fatalf("extension %x: wire reader %+v (%v), the Struct says %+v (%v)", b, got, ok, want, wantOK)
	}
	if got, ok := TotalsOf(f); ok != wantOK || got != want {
		t.Fatalf("TotalsOf %+v (%v), want %+v (%v)", got, ok, want, wantOK)
	}
}

func FuzzTotalsOf(f *testing.F) {
	for _, b := range wireSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkTotals(t, b) })
}

// BenchmarkTotalsOf reads a connection flow's totals through the generic
// Struct unmarshal and through the wire reader, side by side.
func BenchmarkTotalsOf(b *testing.B) {
	f := &flowpb.Flow{Extensions: &anypb.Any{TypeUrl: structTypeURL,
		Value: extensionBytes(b, map[string]any{contract.ExtConnection: connFields(12, 104857600, 8, 520, 84000.0)})}}
	b.Run("struct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			totalsOfStruct(f)
		}
	})
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			TotalsOf(f)
		}
	})
}
