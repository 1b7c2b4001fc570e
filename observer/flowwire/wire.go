package flowwire

import (
	"unicode/utf8"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// openMessage starts a length-delimited field and reserves one byte for
// its length; closeMessage fills it in once the body is written, moving
// the body when the length needs more than one byte (rare: the messages
// written this way are a few dozen bytes).
func openMessage(b []byte, num protowire.Number) ([]byte, int) {
	return openMessageN(b, num, 1)
}

func closeMessage(b []byte, at int) []byte { return closeMessageN(b, at, 1) }

// openMessageN reserves n bytes for the length, for a body whose size is
// known roughly (a flow: two bytes, 128 to 16383).
func openMessageN(b []byte, num protowire.Number, n int) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = append(b, make([]byte, n)...)
	return b, len(b)
}

func closeMessageN(b []byte, at, reserved int) []byte {
	n := len(b) - at
	k := protowire.SizeVarint(uint64(n))
	switch {
	case k == 1 && reserved == 1:
		b[at-1] = byte(n)
		return b
	case k < reserved:
		copy(b[at-reserved+k:], b[at:])
		b = b[:len(b)-(reserved-k)]
	case k > reserved:
		b = append(b, make([]byte, k-reserved)...)
		copy(b[at-reserved+k:], b[at:at+n])
	}
	protowire.AppendVarint(b[:at-reserved], uint64(n))
	return b
}

// The scalar fields of proto3 are left out when zero, as proto.Marshal
// leaves them.
func appendVarintField(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendBoolField(b []byte, num protowire.Number, v bool) []byte {
	if !v {
		return b
	}
	return append(protowire.AppendTag(b, num, protowire.VarintType), 1)
}

// appendStringField writes s; the caller has checked that it is UTF-8.
func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendStrings writes a repeated string field: every element, empty
// ones included.
func appendStrings(b []byte, num protowire.Number, ss []string) ([]byte, error) {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return nil, ErrInvalidUTF8
		}
		b = protowire.AppendTag(b, num, protowire.BytesType)
		b = protowire.AppendString(b, s)
	}
	return b, nil
}

func validUTF8(ss ...string) bool {
	for _, s := range ss {
		if !utf8.ValidString(s) {
			return false
		}
	}
	return true
}

// appendMessage writes a message field through proto.Marshal: for the
// fields flows seldom carry.
func appendMessage[T any, P interface {
	*T
	proto.Message
}](b []byte, num protowire.Number, m P) ([]byte, error) {
	if m == nil {
		return b, nil
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(proto.Size(m)))
	return proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(b, m)
}

// appendPolicies writes a repeated Policy field; a nil element is an
// empty message, as proto.Marshal writes it.
func appendPolicies(b []byte, num protowire.Number, ps []*flowpb.Policy) ([]byte, error) {
	var err error
	for _, p := range ps {
		if p == nil {
			b = append(protowire.AppendTag(b, num, protowire.BytesType), 0)
			continue
		}
		if b, err = appendMessage(b, num, p); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func appendLayer4(b []byte, l4 *flowpb.Layer4) ([]byte, error) {
	if l4 == nil {
		return b, nil
	}
	if len(l4.ProtoReflect().GetUnknown()) > 0 {
		return nil, errGeneric
	}
	b, at := openMessage(b, 6)
	var err error
	switch p := l4.Protocol.(type) {
	case nil:
	case *flowpb.Layer4_TCP:
		t := p.TCP
		if t == nil || len(t.ProtoReflect().GetUnknown()) > 0 {
			return nil, errGeneric
		}
		var tat int
		b, tat = openMessage(b, 1)
		b = appendVarintField(b, 1, uint64(t.SourcePort))
		b = appendVarintField(b, 2, uint64(t.DestinationPort))
		if fl := t.Flags; fl != nil {
			if len(fl.ProtoReflect().GetUnknown()) > 0 {
				return nil, errGeneric
			}
			var fat int
			b, fat = openMessage(b, 3)
			b = appendBoolField(b, 1, fl.FIN)
			b = appendBoolField(b, 2, fl.SYN)
			b = appendBoolField(b, 3, fl.RST)
			b = appendBoolField(b, 4, fl.PSH)
			b = appendBoolField(b, 5, fl.ACK)
			b = appendBoolField(b, 6, fl.URG)
			b = appendBoolField(b, 7, fl.ECE)
			b = appendBoolField(b, 8, fl.CWR)
			b = appendBoolField(b, 9, fl.NS)
			b = closeMessage(b, fat)
		}
		b = closeMessage(b, tat)
	case *flowpb.Layer4_UDP:
		u := p.UDP
		if u == nil || len(u.ProtoReflect().GetUnknown()) > 0 {
			return nil, errGeneric
		}
		var uat int
		b, uat = openMessage(b, 2)
		b = appendVarintField(b, 1, uint64(u.SourcePort))
		b = appendVarintField(b, 2, uint64(u.DestinationPort))
		b = closeMessage(b, uat)
	case *flowpb.Layer4_ICMPv4:
		b, err = appendOneof(b, 3, p.ICMPv4)
	case *flowpb.Layer4_ICMPv6:
		b, err = appendOneof(b, 4, p.ICMPv6)
	case *flowpb.Layer4_SCTP:
		b, err = appendOneof(b, 5, p.SCTP)
	case *flowpb.Layer4_VRRP:
		b, err = appendOneof(b, 6, p.VRRP)
	case *flowpb.Layer4_IGMP:
		b, err = appendOneof(b, 7, p.IGMP)
	default:
		return nil, errGeneric
	}
	if err != nil {
		return nil, err
	}
	return closeMessage(b, at), nil
}

// appendOneof writes a oneof's message; a nil one is left to proto.Marshal.
func appendOneof[T any, P interface {
	*T
	proto.Message
}](b []byte, num protowire.Number, m P) ([]byte, error) {
	if m == nil {
		return nil, errGeneric
	}
	return appendMessage(b, num, m)
}

// appendEndpoint writes an endpoint from the cache, encoding it on first
// sight.
func (e *Encoder) appendEndpoint(b []byte, num protowire.Number, ep *flowpb.Endpoint) ([]byte, error) {
	if ep == nil {
		return b, nil
	}
	body, ok := e.endpoints[ep]
	if !ok {
		var err error
		if body, err = proto.Marshal(ep); err != nil {
			return nil, err
		}
		if len(e.endpoints) >= maxEndpoints {
			clear(e.endpoints)
		}
		e.endpoints[ep] = body
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, body), nil
}
