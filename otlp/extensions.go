package otlp

import (
	"bytes"
	"maps"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
)

// Field numbers of google.protobuf.Struct, its map entries, Value and
// ListValue (struct.proto).
const (
	structFields = 1 // Struct.fields, map<string, Value>
	entryKey     = 1
	entryValue   = 2
	valNull      = 1 // Value.null_value, enum
	valNumber    = 2 // Value.number_value, double
	valString    = 3 // Value.string_value
	valBool      = 4 // Value.bool_value
	valStruct    = 5 // Value.struct_value
	valList      = 6 // Value.list_value
	listValues   = 1 // ListValue.values
)

// Limits of the wire path; what is past them takes the decoding path,
// which gives the same attributes.
const (
	maxExtDepth   = 16
	maxExtEntries = 64
)

var structName = string((&structpb.Struct{}).ProtoReflect().Descriptor().FullName())

// isStructAny is anypb's MessageIs for Struct, on the type URL alone.
func isStructAny(url string) bool {
	if !strings.HasSuffix(url, structName) {
		return false
	}
	return len(url) == len(structName) || url[len(url)-len(structName)-1] == '/'
}

type extEntry struct{ key, val []byte }

// extAttrs flattens a flow's extensions (a Struct in an Any) into
// loupe.<key>.<field> attributes, keys sorted at each level, so that
// whatever a feature puts there is exported without this package knowing
// it. It reads the Struct's wire bytes in place. Anything but the plain
// form a protobuf encoder writes (a repeated key or field, an unknown
// field, a list of other than strings, deep nesting, bad bytes) goes to
// the decoding path instead, which has the protobuf library's semantics;
// both give the same attributes.
type extAttrs struct {
	out    []byte       // the encoded attributes (LogRecord.attributes)
	key    []byte       // the flattened key being written
	levels [][]extEntry // one scratch list of entries per nesting level
	// kernelReason is kernel_drop.reason when it is a string: the
	// kernel's drop reason, for loupe.drop_reason.
	kernelReason []byte
}

func (x *extAttrs) reset() {
	x.out, x.kernelReason = x.out[:0], nil
	x.key = append(x.key[:0], ExtPrefix...)
}

// encode replaces x's attributes with those of f's extensions.
func (x *extAttrs) encode(f *flowpb.Flow) {
	x.reset()
	a := f.GetExtensions()
	if a == nil || !isStructAny(a.GetTypeUrl()) {
		return
	}
	if x.wire(a.GetValue(), 0, false) {
		return
	}
	x.reset()
	x.decoded(a)
}

// wire appends the attributes of one Struct's bytes; kernel says it is
// the kernel_drop object. False: the bytes need the decoding path.
func (x *extAttrs) wire(b []byte, depth int, kernel bool) bool {
	if depth > maxExtDepth {
		return false
	}
	for len(x.levels) <= depth {
		x.levels = append(x.levels, nil)
	}
	ents := x.levels[depth][:0]
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != structFields || typ != protowire.BytesType || len(ents) == maxExtEntries {
			return false
		}
		e, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return false
		}
		b = b[n+m:]
		ent, ok := parseEntry(e)
		if !ok {
			return false
		}
		ents = append(ents, ent)
	}
	x.levels[depth] = ents
	// Insertion sort: a handful of keys, and no allocation.
	for i := 1; i < len(ents); i++ {
		for j := i; j > 0 && bytes.Compare(ents[j-1].key, ents[j].key) > 0; j-- {
			ents[j-1], ents[j] = ents[j], ents[j-1]
		}
	}
	keyLen := len(x.key)
	for i, ent := range ents {
		if i > 0 && bytes.Equal(ents[i-1].key, ent.key) {
			return false // a repeated key: the last wins, once decoded
		}
		if depth > 0 {
			x.key = append(x.key, '.')
		}
		x.key = append(x.key, ent.key...)
		top := depth == 0 && string(ent.key) == contract.ExtKernelDrop
		reason := kernel && string(ent.key) == contract.ExtKernelReason
		if !x.value(ent.val, depth, top, reason) {
			return false
		}
		x.key = x.key[:keyLen]
	}
	return true
}

// parseEntry reads one map entry: a key and a value, each once.
func parseEntry(e []byte) (extEntry, bool) {
	var ent extEntry
	var hasKey, hasVal bool
	for len(e) > 0 {
		num, typ, n := protowire.ConsumeTag(e)
		if n < 0 || typ != protowire.BytesType {
			return ent, false
		}
		v, m := protowire.ConsumeBytes(e[n:])
		if m < 0 {
			return ent, false
		}
		e = e[n+m:]
		switch {
		case num == entryKey && !hasKey:
			ent.key, hasKey = v, true
		case num == entryValue && !hasVal:
			ent.val, hasVal = v, true
		default:
			return ent, false
		}
	}
	return ent, hasVal && utf8.Valid(ent.key)
}

// value appends the attributes of one Value: exactly one field, or none.
func (x *extAttrs) value(b []byte, depth int, kernelDrop, reason bool) bool {
	if len(b) == 0 {
		return true // no kind: no attribute
	}
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return false
	}
	b = b[n:]
	var v []byte
	var u uint64
	switch typ {
	case protowire.VarintType:
		u, n = protowire.ConsumeVarint(b)
	case protowire.Fixed64Type:
		u, n = protowire.ConsumeFixed64(b)
	case protowire.BytesType:
		v, n = protowire.ConsumeBytes(b)
	default:
		return false
	}
	if n != len(b) {
		return false // malformed, or more than one field
	}
	switch {
	case num == valNull && typ == protowire.VarintType:
	case num == valNumber && typ == protowire.Fixed64Type:
		x.out = appendNumberAttr(x.out, x.key, math.Float64frombits(u))
	case num == valString && typ == protowire.BytesType:
		if !utf8.Valid(v) {
			return false
		}
		if reason {
			x.kernelReason = v
		}
		x.out = appendStrAttr(x.out, x.key, v)
	case num == valBool && typ == protowire.VarintType:
		x.out = appendBoolAttr(x.out, x.key, u != 0)
	case num == valStruct && typ == protowire.BytesType:
		return x.wire(v, depth+1, kernelDrop)
	case num == valList && typ == protowire.BytesType:
		return x.list(v)
	default:
		return false
	}
	return true
}

// list appends a list of strings as an array attribute.
func (x *extAttrs) list(b []byte) bool {
	out, a := beginArrayAttr(x.out, x.key)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != listValues || typ != protowire.BytesType {
			return false
		}
		e, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return false
		}
		b = b[n+m:]
		// Other kinds are written as their protobuf text, which the
		// decoding path does.
		num, typ, n = protowire.ConsumeTag(e)
		if n < 0 || num != valString || typ != protowire.BytesType {
			return false
		}
		s, m := protowire.ConsumeBytes(e[n:])
		if m < 0 || n+m != len(e) || !utf8.Valid(s) {
			return false
		}
		out = appendArrayStr(out, s)
	}
	x.out = a.end(out)
	return true
}

// decoded is the decoding path: the protobuf library's Struct.
func (x *extAttrs) decoded(a *anypb.Any) {
	var s structpb.Struct
	if err := a.UnmarshalTo(&s); err != nil {
		return // not a Struct: no attributes, as no reader could use it
	}
	fields := s.GetFields()
	kd := fields[contract.ExtKernelDrop].GetStructValue().GetFields()
	if r := kd[contract.ExtKernelReason].GetStringValue(); r != "" {
		x.kernelReason = []byte(r)
	}
	x.decodedFields(fields, true)
}

func (x *extAttrs) decodedFields(fields map[string]*structpb.Value, top bool) {
	n := len(x.key)
	for _, k := range slices.Sorted(maps.Keys(fields)) {
		if !top {
			x.key = append(x.key, '.')
		}
		x.key = append(x.key, k...)
		x.decodedValue(fields[k])
		x.key = x.key[:n]
	}
}

func (x *extAttrs) decodedValue(v *structpb.Value) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StructValue:
		x.decodedFields(k.StructValue.GetFields(), false)
	case *structpb.Value_StringValue:
		x.out = appendStrAttr(x.out, x.key, k.StringValue)
	case *structpb.Value_BoolValue:
		x.out = appendBoolAttr(x.out, x.key, k.BoolValue)
	case *structpb.Value_NumberValue:
		x.out = appendNumberAttr(x.out, x.key, k.NumberValue)
	case *structpb.Value_ListValue:
		out, a := beginArrayAttr(x.out, x.key)
		for _, e := range k.ListValue.GetValues() {
			if s, ok := e.GetKind().(*structpb.Value_StringValue); ok {
				out = appendArrayStr(out, s.StringValue)
			} else {
				out = appendArrayStr(out, e.String())
			}
		}
		x.out = a.end(out)
	}
}
