package observer

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// structTypeURL is the Any type URL of a google.protobuf.Struct.
var structTypeURL = "type.googleapis.com/" + string((&structpb.Struct{}).ProtoReflect().Descriptor().FullName())

// Field numbers of google.protobuf.Struct and Value (struct.proto).
const (
	structFields = 1 // Struct.fields: map<string, Value>
	mapKey       = 1
	mapValue     = 2
	valueNumber  = 2 // Value.number_value
	valueString  = 3 // Value.string_value
	valueStruct  = 5 // Value.struct_value
)

// extField is one key of an extension object: a number, or a string when
// isStr is set.
type extField struct {
	key   string
	num   float64
	str   string
	isStr bool
}

// setExtensionFields is setExtension for an object of numbers and strings,
// without building a structpb tree: on a flow with no extensions yet (the
// per-event case) it encodes the Struct's wire bytes directly, as
// relay/frame.go hand-encodes frames. Flows with extensions already take
// setExtension, which merges. Readers unmarshal the same Struct either way.
func setExtensionFields(f *flowpb.Flow, key string, fields []extField) {
	if f.GetExtensions() != nil {
		setExtension(f, key, &structpb.Struct{Fields: extValues(fields)})
		return
	}
	inner, val, entry := extensionSizes(key, fields)
	b := make([]byte, 0, protowire.SizeTag(structFields)+protowire.SizeBytes(entry))
	f.Extensions = &anypb.Any{TypeUrl: structTypeURL, Value: appendExtension(b, key, fields, inner, val, entry)}
}

// extValues is fields as structpb values.
func extValues(fields []extField) map[string]*structpb.Value {
	m := make(map[string]*structpb.Value, len(fields))
	for _, x := range fields {
		if x.isStr {
			m[x.key] = structpb.NewStringValue(x.str)
		} else {
			m[x.key] = structpb.NewNumberValue(x.num)
		}
	}
	return m
}

// extensionSizes are the sizes of the inner Struct, of the Value holding
// it and of the outer map entry.
func extensionSizes(key string, fields []extField) (inner, val, entry int) {
	for _, x := range fields {
		inner += entrySize(x)
	}
	val = protowire.SizeTag(valueStruct) + protowire.SizeBytes(inner)
	entry = protowire.SizeTag(mapKey) + protowire.SizeBytes(len(key)) + protowire.SizeTag(mapValue) + protowire.SizeBytes(val)
	return inner, val, entry
}

// appendExtension appends Struct{key: Value{struct_value: Struct{fields}}}.
// The sizes are extensionSizes'.
func appendExtension(b []byte, key string, fields []extField, inner, val, entry int) []byte {
	b = appendExtensionHeader(b, key, inner, val, entry)
	for _, x := range fields {
		b = appendEntry(b, x)
	}
	return b
}

// appendExtensionHeader is appendExtension up to its first field.
func appendExtensionHeader(b []byte, key string, inner, val, entry int) []byte {
	b = protowire.AppendTag(b, structFields, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(entry))
	b = protowire.AppendTag(b, mapKey, protowire.BytesType)
	b = protowire.AppendString(b, key)
	b = protowire.AppendTag(b, mapValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(val))
	b = protowire.AppendTag(b, valueStruct, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(inner))
}

// extTemplate is the wire form of an extension whose keys and strings are
// fixed and whose numbers vary. A number is a fixed64, so its bytes sit at
// the same offset whatever its value: each flow copies the template and
// writes its numbers in place, instead of encoding every key again.
type extTemplate struct {
	wire []byte
	nums []int // where each number field's 8 bytes start, in field order
}

// newExtTemplate is the template of key's object with fields; their
// numbers are placeholders.
func newExtTemplate(key string, fields []extField) *extTemplate {
	inner, val, entry := extensionSizes(key, fields)
	t := &extTemplate{wire: appendExtensionHeader(nil, key, inner, val, entry)}
	for _, x := range fields {
		t.wire = appendEntry(t.wire, x)
		if !x.isStr {
			t.nums = append(t.nums, len(t.wire)-8)
		}
	}
	return t
}

// set makes a the template's extension with nums, one per number field in
// order, in bytes from s. It is setExtensionFields for a flow that has no
// extensions yet.
func (t *extTemplate) set(a *anypb.Any, nums []float64, s *byteSlab) {
	b := s.take(len(t.wire))
	copy(b, t.wire)
	for i, off := range t.nums {
		binary.LittleEndian.PutUint64(b[off:], math.Float64bits(nums[i]))
	}
	a.TypeUrl, a.Value = structTypeURL, b
}

// valueSize is the size of x's Value message.
func valueSize(x extField) int {
	if x.isStr {
		return protowire.SizeTag(valueString) + protowire.SizeBytes(len(x.str))
	}
	return protowire.SizeTag(valueNumber) + protowire.SizeFixed64()
}

// entrySize is the size of x's map entry, with its tag and length.
func entrySize(x extField) int {
	n := protowire.SizeTag(mapKey) + protowire.SizeBytes(len(x.key)) + protowire.SizeTag(mapValue) + protowire.SizeBytes(valueSize(x))
	return protowire.SizeTag(structFields) + protowire.SizeBytes(n)
}

func appendEntry(b []byte, x extField) []byte {
	vs := valueSize(x)
	n := protowire.SizeTag(mapKey) + protowire.SizeBytes(len(x.key)) + protowire.SizeTag(mapValue) + protowire.SizeBytes(vs)
	b = protowire.AppendTag(b, structFields, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(n))
	b = protowire.AppendTag(b, mapKey, protowire.BytesType)
	b = protowire.AppendString(b, x.key)
	b = protowire.AppendTag(b, mapValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(vs))
	if x.isStr {
		b = protowire.AppendTag(b, valueString, protowire.BytesType)
		return protowire.AppendString(b, x.str)
	}
	b = protowire.AppendTag(b, valueNumber, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(x.num))
}
