package conndelta

import (
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/loupe-project/loupe/contract"
)

// Field numbers of google.protobuf.Struct, its map entries, Value and
// ListValue (struct.proto).
const (
	structFields = 1 // Struct.fields, map<string, Value>; also ListValue.values
	entryKey     = 1
	entryValue   = 2
	valueNull    = 1
	valueNumber  = 2
	valueString  = 3
	valueBool    = 4
	valueStruct  = 5
	valueList    = 6
)

// maxWireDepth is how deep totalsFromWire follows nested structs and
// lists before it leaves the flow to the generic path.
const maxWireDepth = 32

// totalsFromWire reads a connection's totals from the wire bytes of a
// flow's Struct extension, without building the Struct: TotalsOf through
// anypb spent a quarter of the relay's CPU on its map of the cluster.
// clean is false when the bytes hold anything it does not settle by
// itself: malformed wire, a string that is not UTF-8 (which fails the
// generic unmarshal), a known field with another wire type or set twice
// (which the generic unmarshal merges), or deep nesting. The caller then
// takes the generic path, whose answer is the reference (FuzzTotalsOf).
func totalsFromWire(b []byte) (tot Totals, ok, clean bool) {
	var conn []byte // the last "connection" entry's Value
	var hasConn bool
	for it := (entries{b: b}); ; {
		key, val, hasVal, more := it.next()
		if !more {
			if !it.clean {
				return tot, false, false
			}
			break
		}
		if string(key) == contract.ExtConnection {
			conn, hasConn = val, hasVal
		}
	}
	if !hasConn {
		return tot, false, true
	}
	inner, isStruct, clean := structValue(conn)
	if !clean || !isStruct {
		return tot, false, clean
	}
	for it := (entries{b: inner, depth: 1}); ; {
		key, val, hasVal, more := it.next()
		if !more {
			if !it.clean {
				return Totals{}, false, false
			}
			return tot, ok, true
		}
		ok = true // a Struct with an entry has a non-nil map
		var dst *uint64
		switch string(key) {
		case contract.ExtConnPacketsSent:
			dst = &tot.PacketsSent
		case contract.ExtConnBytesSent:
			dst = &tot.BytesSent
		case contract.ExtConnPacketsReceived:
			dst = &tot.PacketsReceived
		case contract.ExtConnBytesReceived:
			dst = &tot.BytesReceived
		case contract.ExtConnHandshakeNS:
			dst = &tot.HandshakeNS
		default:
			continue
		}
		*dst = 0 // a later entry for the key replaces an earlier one
		if hasVal {
			if f, isNum := numberValue(val); isNum {
				*dst = uint64(f)
			}
		}
	}
}

// entries walks the entries of a Struct's wire bytes, in order, checking
// each entry's Value (and what it nests) down to maxWireDepth. After the
// last, clean says whether the bytes were (see totalsFromWire).
type entries struct {
	b     []byte
	depth int
	clean bool
}

// next is the next entry; more is false at the end or at the first
// flaw.
func (it *entries) next() (key, val []byte, hasVal, more bool) {
	if it.depth > maxWireDepth {
		return nil, nil, false, false
	}
	for len(it.b) > 0 {
		num, typ, n := protowire.ConsumeTag(it.b)
		if n < 0 {
			return nil, nil, false, false
		}
		it.b = it.b[n:]
		if num != structFields {
			if n = protowire.ConsumeFieldValue(num, typ, it.b); n < 0 {
				return nil, nil, false, false
			}
			it.b = it.b[n:]
			continue
		}
		if typ != protowire.BytesType {
			return nil, nil, false, false
		}
		entry, n := protowire.ConsumeBytes(it.b)
		if n < 0 {
			return nil, nil, false, false
		}
		it.b = it.b[n:]
		key, val, hasKey, hasVal, ok := splitEntry(entry)
		if !ok || (hasKey && !utf8.Valid(key)) || (hasVal && !cleanValue(val, it.depth+1)) {
			return nil, nil, false, false
		}
		return key, val, hasVal, true
	}
	it.clean = true
	return nil, nil, false, false
}

// cleanStruct checks a Struct and what it nests.
func cleanStruct(b []byte, depth int) bool {
	it := entries{b: b, depth: depth}
	for {
		if _, _, _, more := it.next(); !more {
			return it.clean
		}
	}
}

// splitEntry is a map entry's key and Value bytes; ok is false for
// malformed wire and for a key or value given twice.
func splitEntry(b []byte) (key, val []byte, hasKey, hasVal, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		if (num == entryKey || num == entryValue) && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return
			}
			b = b[n:]
			if num == entryKey {
				if hasKey {
					return
				}
				key, hasKey = v, true
			} else {
				if hasVal {
					return
				}
				val, hasVal = v, true
			}
			continue
		}
		if num == entryKey || num == entryValue {
			return // a known field with another wire type
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return
		}
		b = b[n:]
	}
	return key, val, hasKey, hasVal, true
}

// valueField is the one kind a Value sets and its payload: for a number
// its 8 bytes, for a string, struct or list its bytes. ok is false for
// malformed wire, a known field with another wire type, or more than one
// kind set. kind 0: none.
func valueField(b []byte) (kind protowire.Number, payload []byte, bits uint64, ok bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, nil, 0, false
		}
		b = b[n:]
		var want protowire.Type
		switch num {
		case valueNull, valueBool:
			want = protowire.VarintType
		case valueNumber:
			want = protowire.Fixed64Type
		case valueString, valueStruct, valueList:
			want = protowire.BytesType
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return 0, nil, 0, false
			}
			b = b[n:]
			continue
		}
		if typ != want || kind != 0 {
			return 0, nil, 0, false
		}
		kind = num
		switch want {
		case protowire.VarintType:
			_, n = protowire.ConsumeVarint(b)
		case protowire.Fixed64Type:
			bits, n = protowire.ConsumeFixed64(b)
		default:
			payload, n = protowire.ConsumeBytes(b)
		}
		if n < 0 {
			return 0, nil, 0, false
		}
		b = b[n:]
	}
	return kind, payload, bits, true
}

// cleanValue checks a Value and what it nests.
func cleanValue(b []byte, depth int) bool {
	if depth > maxWireDepth {
		return false
	}
	kind, payload, _, ok := valueField(b)
	if !ok {
		return false
	}
	switch kind {
	case valueString:
		return utf8.Valid(payload)
	case valueStruct:
		return cleanStruct(payload, depth+1)
	case valueList:
		return cleanList(payload, depth+1)
	}
	return true
}

// cleanList checks a ListValue's values.
func cleanList(b []byte, depth int) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num != structFields {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		if typ != protowire.BytesType {
			return false
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 || !cleanValue(v, depth+1) {
			return false
		}
		b = b[n:]
	}
	return true
}

// structValue is a clean Value's struct bytes, when it holds a struct.
func structValue(b []byte) (inner []byte, isStruct, clean bool) {
	kind, payload, _, ok := valueField(b)
	if !ok {
		return nil, false, false
	}
	return payload, kind == valueStruct, true
}

// numberValue is a clean Value's number, when it holds one.
func numberValue(b []byte) (float64, bool) {
	kind, _, bits, ok := valueField(b)
	if !ok || kind != valueNumber {
		return 0, false
	}
	return math.Float64frombits(bits), true
}
