package otlp

import (
	"math"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers of the OTLP messages the encoder writes
// (opentelemetry/proto/{collector/logs,logs,common}/v1/*.proto).
const (
	reqResourceLogs = 1 // ExportLogsServiceRequest.resource_logs

	rlResource  = 1 // ResourceLogs.resource
	rlScopeLogs = 2 // ResourceLogs.scope_logs

	slScope      = 1 // ScopeLogs.scope
	slLogRecords = 2 // ScopeLogs.log_records

	lrTime           = 1  // LogRecord.time_unix_nano, fixed64
	lrSeverityNumber = 2  // LogRecord.severity_number, enum
	lrSeverityText   = 3  // LogRecord.severity_text
	lrBody           = 5  // LogRecord.body, AnyValue
	lrAttributes     = 6  // LogRecord.attributes, KeyValue
	lrObservedTime   = 11 // LogRecord.observed_time_unix_nano, fixed64
	lrEventName      = 12 // LogRecord.event_name

	kvKey   = 1 // KeyValue.key
	kvValue = 2 // KeyValue.value, AnyValue

	avString = 1 // AnyValue.string_value
	avBool   = 2 // AnyValue.bool_value
	avInt    = 3 // AnyValue.int_value, int64 varint
	avDouble = 4 // AnyValue.double_value, fixed64
	avArray  = 5 // AnyValue.array_value, ArrayValue

	arrValues = 1 // ArrayValue.values, AnyValue
)

// OTLP severity numbers (logs.proto SeverityNumber).
const (
	severityInfo = 9
	severityWarn = 13
)

// text is what the encoder writes strings from: constants and flow fields
// (string) or bytes it assembled or found in a flow's wire bytes ([]byte),
// without converting one into the other.
type text interface{ ~string | ~[]byte }

func sizeStr[S text](s S) int { return protowire.SizeBytes(len(s)) }

func appendBytesField[S text](b []byte, num protowire.Number, s S) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(len(s)))
	return append(b, s...)
}

func validUTF8[S text](s S) bool {
	// The one-byte loop is the common case (ASCII names and addresses)
	// and needs no call.
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return utf8.ValidString(string(s[i:]))
		}
	}
	return true
}

// appendKVHeader starts one attribute (LogRecord.attributes, a KeyValue)
// whose AnyValue, of avSize bytes, the caller appends next.
func appendKVHeader[K text](b []byte, key K, avSize int) []byte {
	kvSize := protowire.SizeTag(kvKey) + sizeStr(key) + protowire.SizeTag(kvValue) + protowire.SizeBytes(avSize)
	b = protowire.AppendTag(b, lrAttributes, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(kvSize))
	b = appendBytesField(b, kvKey, key)
	b = protowire.AppendTag(b, kvValue, protowire.BytesType)
	return protowire.AppendVarint(b, uint64(avSize))
}

// appendStrAttr appends a string attribute. Protobuf strings are UTF-8: a
// value that is not (bytes a flow carried from a packet) has each bad run
// replaced by U+FFFD, so that one flow cannot make a whole request
// undecodable.
func appendStrAttr[K, V text](b []byte, key K, v V) []byte {
	if !validUTF8(v) {
		return appendStrAttr(b, key, strings.ToValidUTF8(string(v), "\uFFFD"))
	}
	b = appendKVHeader(b, key, protowire.SizeTag(avString)+sizeStr(v))
	return appendBytesField(b, avString, v)
}

// appendStrAttrIf appends a string attribute unless v is empty: an absent
// attribute says "unknown" better than an empty one.
func appendStrAttrIf[K, V text](b []byte, key K, v V) []byte {
	if len(v) == 0 {
		return b
	}
	return appendStrAttr(b, key, v)
}

func appendIntAttr[K text](b []byte, key K, v int64) []byte {
	b = appendKVHeader(b, key, protowire.SizeTag(avInt)+protowire.SizeVarint(uint64(v)))
	b = protowire.AppendTag(b, avInt, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

func appendBoolAttr[K text](b []byte, key K, v bool) []byte {
	b = appendKVHeader(b, key, protowire.SizeTag(avBool)+1)
	b = protowire.AppendTag(b, avBool, protowire.VarintType)
	return protowire.AppendVarint(b, protowire.EncodeBool(v))
}

func appendDoubleAttr[K text](b []byte, key K, v float64) []byte {
	b = appendKVHeader(b, key, protowire.SizeTag(avDouble)+protowire.SizeFixed64())
	b = protowire.AppendTag(b, avDouble, protowire.Fixed64Type)
	return protowire.AppendFixed64(b, math.Float64bits(v))
}

// appendNumberAttr appends a Struct number: an integer when it is whole
// (as loupe's counters are), else a double.
func appendNumberAttr[K text](b []byte, key K, n float64) []byte {
	if n == float64(int64(n)) {
		return appendIntAttr(b, key, int64(n))
	}
	return appendDoubleAttr(b, key, n)
}

// arrayAttr appends an attribute whose value is an array of strings: begin
// it, add each element, end it. The lengths are patched in at the end.
type arrayAttr struct{ kv, av, arr int }

func beginArrayAttr[K text](b []byte, key K) ([]byte, arrayAttr) {
	var a arrayAttr
	b = protowire.AppendTag(b, lrAttributes, protowire.BytesType)
	b, a.kv = beginLen(b, 1)
	b = appendBytesField(b, kvKey, key)
	b = protowire.AppendTag(b, kvValue, protowire.BytesType)
	b, a.av = beginLen(b, 1)
	b = protowire.AppendTag(b, avArray, protowire.BytesType)
	b, a.arr = beginLen(b, 1)
	return b, a
}

func appendArrayStr[S text](b []byte, s S) []byte {
	if !validUTF8(s) {
		return appendArrayStr(b, strings.ToValidUTF8(string(s), "\uFFFD"))
	}
	b = protowire.AppendTag(b, arrValues, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(protowire.SizeTag(avString)+sizeStr(s)))
	return appendBytesField(b, avString, s)
}

func (a arrayAttr) end(b []byte) []byte {
	// Innermost first: each end may move what follows its mark.
	b = endLen(b, a.arr, 1)
	b = endLen(b, a.av, 1)
	return endLen(b, a.kv, 1)
}

// beginLen reserves room bytes for the length of the message that
// follows, and returns where they start.
func beginLen(b []byte, room int) ([]byte, int) {
	m := len(b)
	for range room {
		b = append(b, 0)
	}
	return b, m
}

// endLen writes the length of everything after the room bytes at mark,
// moving it when the length takes more or fewer bytes than reserved.
func endLen(b []byte, mark, room int) []byte {
	n := len(b) - mark - room
	size := protowire.SizeVarint(uint64(n))
	if size != room {
		end := len(b)
		if size > room {
			b = append(b, make([]byte, size-room)...)
		}
		copy(b[mark+size:], b[mark+room:end])
		b = b[:mark+size+n]
	}
	protowire.AppendVarint(b[mark:mark], uint64(n))
	return b
}
