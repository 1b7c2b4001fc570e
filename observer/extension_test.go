package observer

import (
	"bytes"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
)

// The hand-encoded extension must decode to what structpb and anypb.New
// encode for the same fields.
func TestSetExtensionFieldsMatchesStructpb(t *testing.T) {
	cases := [][]extField{
		{{key: "packets_sent", num: 3}, {key: "bytes_sent", num: 0}, {key: "observed_at", str: "client", isStr: true}},
		{{key: "big", num: 1 << 60}, {key: "neg", num: -2.5}, {key: "nan", num: math.Inf(1)}, {key: "", str: "", isStr: true}},
		{{key: "long", str: string(make([]byte, 300)), isStr: true}},
		nil,
	}
	for i, fields := range cases {
		got := &flowpb.Flow{}
		setExtensionFields(got, "connection", fields)

		want := &flowpb.Flow{}
		setExtension(want, "connection", &structpb.Struct{Fields: extValues(fields)})

		if got.Extensions.GetTypeUrl() != want.Extensions.GetTypeUrl() {
			t.Fatalf("case %d: type url %q, want %q", i, got.Extensions.GetTypeUrl(), want.Extensions.GetTypeUrl())
		}
		var gs, ws structpb.Struct
		if err := got.Extensions.UnmarshalTo(&gs); err != nil {
			t.Fatalf("case %d: hand-encoded extension does not decode: %v", i, err)
		}
		if err := want.Extensions.UnmarshalTo(&ws); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&gs, &ws) {
			t.Fatalf("case %d: got %v, want %v", i, &gs, &ws)
		}
		if got, want := len(got.Extensions.Value), proto.Size(&ws); got != want {
			t.Fatalf("case %d: %d bytes, structpb encodes %d", i, got, want)
		}
	}
}

// On a flow that carries extensions already, the fields are merged in
// beside the keys that are there.
func TestSetExtensionFieldsKeepsOtherKeys(t *testing.T) {
	f := &flowpb.Flow{}
	other, _ := structpb.NewStruct(map[string]any{"x": 1.0})
	setExtension(f, "tcp", other)
	setExtensionFields(f, "connection", []extField{{key: "packets_sent", num: 7}})
	var s structpb.Struct
	if err := f.Extensions.UnmarshalTo(&s); err != nil {
		t.Fatal(err)
	}
	if s.Fields["tcp"].GetStructValue().Fields["x"].GetNumberValue() != 1 ||
		s.Fields["connection"].GetStructValue().Fields["packets_sent"].GetNumberValue() != 7 {
		t.Fatalf("merged extension: %v", &s)
	}
	if _, err := anypb.UnmarshalNew(f.Extensions, proto.UnmarshalOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A template filled with numbers must be, byte for byte, what
// setExtensionFields encodes for the same fields, and stay so while the
// byte slab hands out the next flows' bytes.
func TestExtTemplateMatchesSetExtensionFields(t *testing.T) {
	var slab byteSlab
	type made struct{ got, want []byte }
	var all []made
	values := [][5]float64{{0, 0, 0, 0, 0}, {1, 60, 2, 120, 52000}, {1 << 60, math.MaxUint32, -2.5, math.Inf(1), 1e-9}}
	for at, atName := range [2]string{contract.ObservedAtClient, contract.ObservedAtServer} {
		for hs := range 2 {
			for _, v := range values {
				fields := []extField{
					{key: contract.ExtConnPacketsSent, num: v[0]}, {key: contract.ExtConnBytesSent, num: v[1]},
					{key: contract.ExtConnPacketsReceived, num: v[2]}, {key: contract.ExtConnBytesReceived, num: v[3]},
					{key: contract.ExtConnObservedAt, str: atName, isStr: true}, {key: contract.ExtConnHandshakeNS, num: v[4]},
				}
				want := &flowpb.Flow{}
				setExtensionFields(want, contract.ExtConnection, fields[:len(fields)-1+hs])
				var got anypb.Any
				connTemplates[at][hs].set(&got, v[:], &slab)
				if got.TypeUrl != want.Extensions.TypeUrl || !bytes.Equal(got.Value, want.Extensions.Value) {
					t.Fatalf("%s, handshake %d, %v: template gives %x, want %x", atName, hs, v, got.Value, want.Extensions.Value)
				}
				all = append(all, made{got.Value, want.Extensions.Value})
			}
		}
	}
	// Enough more to fill several of the slab's arrays.
	for i := range 2 * byteSlabSize / len(all[0].got) {
		var a anypb.Any
		connTemplates[i%2][1].set(&a, []float64{float64(i), 1, 2, 3, 4}, &slab)
		a.Value = append(a.Value, 0xff) // capped: copies instead of writing into the next value
	}
	for i, m := range all {
		if !bytes.Equal(m.got, m.want) {
			t.Fatalf("value %d changed after later flows: %x, want %x", i, m.got, m.want)
		}
	}
}

// BenchmarkConnectionExtension compares the two encodings of a flow's
// connection extension side by side: the structpb tree + anypb.New it
// replaced, and the hand-encoded wire bytes.
func BenchmarkConnectionExtension(b *testing.B) {
	fields := []extField{
		{key: "packets_sent", num: 12}, {key: "bytes_sent", num: 4096}, {key: "packets_received", num: 10},
		{key: "bytes_received", num: 90000}, {key: "observed_at", str: "client", isStr: true}, {key: "handshake_ns", num: 52000},
	}
	b.Run("structpb", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			setExtension(&flowpb.Flow{}, "connection", &structpb.Struct{Fields: extValues(fields)})
		}
	})
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			setExtensionFields(&flowpb.Flow{}, "connection", fields)
		}
	})
	b.Run("template", func(b *testing.B) {
		b.ReportAllocs()
		t := newExtTemplate("connection", fields)
		nums := []float64{12, 4096, 10, 90000, 52000}
		var slab byteSlab
		for b.Loop() {
			f := &flowpb.Flow{Extensions: &anypb.Any{}}
			t.set(f.Extensions, nums, &slab)
		}
	})
}
