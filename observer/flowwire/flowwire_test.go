package flowwire

import (
	"bytes"
	"fmt"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// checkSame fails unless Append writes what proto.Marshal writes, or
// both fail.
func checkSame(t testing.TB, e *Encoder, f *flowpb.Flow) {
	t.Helper()
	want, werr := proto.Marshal(f)
	prefix := []byte("prefix")
	got, gerr := e.Append(append([]byte(nil), prefix...), f)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("proto.Marshal error %v, Append error %v", werr, gerr)
	}
	if werr != nil {
		if !bytes.Equal(got, prefix) {
			t.Fatalf("Append failed but changed the buffer: %q", got)
		}
		return
	}
	if !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], want) {
		got = got[len(prefix):]
		i := 0
		for i < min(len(got), len(want)) && got[i] == want[i] {
			i++
		}
		t.Fatalf("Append wrote %d bytes, proto.Marshal %d; they differ from byte %d: %x against %x",
			len(got), len(want), i, got[i:min(len(got), i+16)], want[i:min(len(want), i+16)])
	}
}

// checkSameResponse is checkSame for AppendFlowResponse.
func checkSameResponse(t testing.TB, e *Encoder, f *flowpb.Flow, node string, at *timestamppb.Timestamp) {
	t.Helper()
	want, werr := proto.Marshal(&observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: node, Time: at})
	prefix := []byte("prefix")
	got, gerr := e.AppendFlowResponse(append([]byte(nil), prefix...), f, node, at)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("proto.Marshal error %v, AppendFlowResponse error %v", werr, gerr)
	}
	if werr != nil {
		if !bytes.Equal(got, prefix) {
			t.Fatalf("AppendFlowResponse failed but changed the buffer: %q", got)
		}
		return
	}
	if !bytes.HasPrefix(got, prefix) || !bytes.Equal(got[len(prefix):], want) {
		t.Fatalf("AppendFlowResponse wrote %x, proto.Marshal %x", got[len(prefix):], want)
	}
	// The same response from the flow's own wire form.
	flow, err := e.Append(nil, f)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	got, err = e.AppendFlowResponseWire(append([]byte(nil), prefix...), flow, node, at)
	if err != nil || !bytes.Equal(got[len(prefix):], want) {
		t.Fatalf("AppendFlowResponseWire wrote %x (error %v), proto.Marshal %x", got[len(prefix):], err, want)
	}
}

// populate sets every field of m, recursively to depth, choosing the
// oneof option numbered pick among each oneof's fields.
func populate(m protoreflect.Message, depth, pick int) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
			if o.Fields().Get(pick%o.Fields().Len()) != fd {
				continue
			}
		}
		switch {
		case fd.IsMap():
			continue // flows have none
		case fd.IsList():
			l := m.Mutable(fd).List()
			for j := range 2 {
				if fd.Kind() == protoreflect.MessageKind {
					if depth > 0 {
						el := l.NewElement()
						populate(el.Message(), depth-1, pick+j)
						l.Append(el)
					}
					continue
				}
				l.Append(scalar(fd, j))
			}
		case fd.Kind() == protoreflect.MessageKind:
			if depth > 0 {
				populate(m.Mutable(fd).Message(), depth-1, pick)
			}
		default:
			m.Set(fd, scalar(fd, 0))
		}
	}
}

// scalar is a value of fd's kind that needs more than one byte where it
// can: large numbers, negative signed ones, long strings.
func scalar(fd protoreflect.FieldDescriptor, j int) protoreflect.Value {
	n := int64(fd.Number())*1000003 + int64(j)
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(true)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(1 + j))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(-int32(n % 100000))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(-n)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(n) << 20)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1.5)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(2.5)
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(fmt.Sprintf("%s-%d-%0150d", fd.Name(), j, n))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(bytes.Repeat([]byte{byte(n)}, 130+j))
	}
	panic(fmt.Sprintf("kind %v", fd.Kind()))
}

// TestAppendMatchesProto writes flows with every field of the Flow message
// set (each oneof option in turn), and with none, and holds Append to
// proto.Marshal's bytes: a field added to Flow upstream and not written
// here fails it.
func TestAppendMatchesProto(t *testing.T) {
	e := NewEncoder()
	checkSame(t, e, &flowpb.Flow{})
	for pick := range 8 {
		for _, depth := range []int{1, 4} {
			f := &flowpb.Flow{}
			populate(f.ProtoReflect(), depth, pick)
			checkSame(t, e, f)
			checkSame(t, e, f) // the endpoints now from the cache
			checkSameResponse(t, e, f, "node-1", f.Time)
		}
	}
}

// TestAppendSmallAndEdgeCases covers what a populated flow does not: zero
// fields left out, sub-messages present but empty, lengths right at the
// one-byte boundary, and nil oneof values.
func TestAppendSmallAndEdgeCases(t *testing.T) {
	e := NewEncoder()
	ep := &flowpb.Endpoint{Namespace: "x", PodName: "a", Labels: []string{"k8s:app=a"}}
	cases := []*flowpb.Flow{
		{Time: &timestamppb.Timestamp{}, IP: &flowpb.IP{}, L4: &flowpb.Layer4{}, IsReply: &wrapperspb.BoolValue{}},
		{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{}}}},
		{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{Flags: &flowpb.TCPFlags{}}}}},
		{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{}}},
		{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{}}},
		{L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_ICMPv4{}}},
		{Source: ep, Destination: ep},
		{Source: &flowpb.Endpoint{}, Destination: ep},
		{Extensions: &anypb.Any{}},
		{Extensions: &anypb.Any{TypeUrl: "t", Value: make([]byte, 200)}},
		{EgressAllowedBy: []*flowpb.Policy{nil}},
		{Summary: string([]byte{0xff})},
		{NodeLabels: []string{"ok", string([]byte{0xc3})}},
		{Source: &flowpb.Endpoint{PodName: string([]byte{0xff})}},
		{IP: &flowpb.IP{Source: string([]byte{0xff})}},
		{Interface: &flowpb.NetworkInterface{Name: string([]byte{0xff})}},
		{L7: &flowpb.Layer7{Record: &flowpb.Layer7_Http{Http: &flowpb.HTTP{Url: string([]byte{0xff})}}}},
	}
	for n := 100; n < 140; n++ { // the one-byte length boundary of IP
		cases = append(cases, &flowpb.Flow{IP: &flowpb.IP{Source: string(bytes.Repeat([]byte{'a'}, n))}})
	}
	for _, f := range cases {
		checkSame(t, e, f)
		checkSameResponse(t, e, f, "", nil)
		checkSameResponse(t, e, f, "n", &timestamppb.Timestamp{Seconds: 1, Nanos: -1})
	}
	checkSameResponse(t, e, &flowpb.Flow{}, string([]byte{0xff}), nil)
	for n := 16300; n < 16400; n += 7 { // the two-byte length boundary of a flow
		checkSameResponse(t, e, &flowpb.Flow{Summary: string(bytes.Repeat([]byte{'a'}, n))}, "n", nil)
	}
}

func FuzzAppend(f *testing.F) {
	full := &flowpb.Flow{}
	populate(full.ProtoReflect(), 3, 0)
	seed, _ := proto.Marshal(full)
	f.Add(seed)
	f.Add([]byte{})
	e := NewEncoder()
	f.Fuzz(func(t *testing.T, data []byte) {
		var fl flowpb.Flow
		if proto.Unmarshal(data, &fl) != nil {
			return
		}
		e.Reset() // endpoints are new objects each time, but the cache must not grow unbounded
		checkSame(t, e, &fl)
		checkSameResponse(t, e, &fl, "node", fl.Time)
	})
}
