package flowwire

import (
	"errors"
	"unicode/utf8"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// writer appends fields to b and keeps the first error; every method does
// nothing once there is one, so a message is written without a check per
// field and the caller looks once, in result.
type writer struct {
	b   []byte
	err error
	enc *Encoder
}

// set makes nb, which extends w.b, the buffer. On the same array (the
// usual case: callers reuse buffers) it stores only the length: storing the
// slice through w, which the compiler cannot place on the stack, costs a
// GC write barrier per field while a collection runs, which profiles of
// the agent put at 7% of its CPU.
func (w *writer) set(nb []byte) {
	if cap(nb) == cap(w.b) {
		w.b = w.b[:len(nb)]
		return
	}
	w.b = nb
}

// appendTag and appendVarint are protowire's with the short cases inlined:
// nearly every tag of a flow fits in two bytes and every value but its
// time in one, and the calls into protowire's switch cost more than the
// writing did.
func appendTag(b []byte, num protowire.Number, typ protowire.Type) []byte {
	x := uint64(num)<<3 | uint64(typ)
	if x < 1<<7 {
		return append(b, byte(x))
	}
	if x < 1<<14 {
		return append(b, byte(x)|0x80, byte(x>>7))
	}
	return protowire.AppendVarint(b, x)
}

func appendVarint(b []byte, v uint64) []byte {
	if v < 0x80 {
		return append(b, byte(v))
	}
	return protowire.AppendVarint(b, v)
}

// errGeneric sends what this package does not write by hand (unknown
// fields in a message it writes, a nil oneof value) to proto.Marshal; it
// never leaves the package.
var errGeneric = errors.New("flowwire: not written by hand")

// result returns what was written after start, or, for errGeneric, what
// generic writes; on any other error, b as it was.
func (w *writer) result(start int, generic func() ([]byte, error)) ([]byte, error) {
	switch {
	case w.err == nil:
		return w.b, nil
	case errors.Is(w.err, errGeneric):
		out, err := generic()
		if err != nil {
			return w.b[:start], err
		}
		return out, nil
	}
	return w.b[:start], w.err
}

// known reports whether m has no unknown fields, which only proto.Marshal
// writes back.
func (w *writer) known(m proto.Message) bool {
	if w.err != nil {
		return false
	}
	if w.enc.skipUnknown {
		return true
	}
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		w.err = errGeneric
		return false
	}
	return true
}

// open starts a length-delimited field and reserves n bytes for its
// length; close fills it in once the body is written, moving the body
// when its length needs another number of bytes (rare: the reservations
// fit the messages written here).
func (w *writer) open(num protowire.Number, n int) int {
	if w.err != nil {
		return 0
	}
	w.set(appendTag(w.b, num, protowire.BytesType))
	w.set(append(w.b, make([]byte, n)...))
	return len(w.b)
}

func (w *writer) close(at, reserved int) {
	if w.err != nil {
		return
	}
	b := w.b
	n := len(b) - at
	k := protowire.SizeVarint(uint64(n))
	switch {
	case k == 1 && reserved == 1:
		b[at-1] = byte(n)
		return
	case k < reserved:
		copy(b[at-reserved+k:], b[at:])
		b = b[:len(b)-(reserved-k)]
	case k > reserved:
		b = append(b, make([]byte, k-reserved)...)
		copy(b[at-reserved+k:], b[at:at+n])
	}
	protowire.AppendVarint(b[:at-reserved], uint64(n))
	w.set(b)
}

// The scalar fields of proto3 are left out when zero, as proto.Marshal
// leaves them.
// (Most of a flow's fields are zero: varint and bool stay small enough to
// be inlined, and only a set field costs a call.)
func (w *writer) varint(num protowire.Number, v uint64) {
	if v != 0 {
		w.setVarint(num, v)
	}
}

func (w *writer) setVarint(num protowire.Number, v uint64) {
	if w.err == nil {
		w.set(appendVarint(appendTag(w.b, num, protowire.VarintType), v))
	}
}

func (w *writer) bool(num protowire.Number, v bool) {
	if v {
		w.setVarint(num, 1)
	}
}

func (w *writer) string(num protowire.Number, s string) {
	if s != "" {
		w.element(num, s)
	}
}

// element writes one string, empty or not, as proto3 requires valid UTF-8.
func (w *writer) element(num protowire.Number, s string) {
	if w.err != nil {
		return
	}
	if !utf8.ValidString(s) {
		w.err = ErrInvalidUTF8
		return
	}
	w.set(appendTag(w.b, num, protowire.BytesType))
	w.set(append(appendVarint(w.b, uint64(len(s))), s...))
}

func (w *writer) bytes(num protowire.Number, v []byte) {
	if len(v) == 0 || w.err != nil {
		return
	}
	w.set(appendTag(w.b, num, protowire.BytesType))
	w.set(append(appendVarint(w.b, uint64(len(v))), v...))
}

// strings writes a repeated string field: every element, empty ones
// included.
func (w *writer) strings(num protowire.Number, ss []string) {
	for _, s := range ss {
		w.element(num, s)
	}
}

func (w *writer) timestamp(num protowire.Number, t *timestamppb.Timestamp) {
	if t == nil || !w.known(t) {
		return
	}
	at := w.open(num, 1)
	w.varint(1, uint64(t.Seconds))
	w.varint(2, uint64(int64(t.Nanos)))
	w.close(at, 1)
}

// message writes a message field through proto.Marshal: for the fields
// flows seldom carry.
func message[T any, P interface {
	*T
	proto.Message
}](w *writer, num protowire.Number, m P) {
	if m == nil || w.err != nil {
		return
	}
	w.set(appendTag(w.b, num, protowire.BytesType))
	w.set(protowire.AppendVarint(w.b, uint64(proto.Size(m))))
	w.b, w.err = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(w.b, m)
}

// oneof writes a oneof's message; a nil one is left to proto.Marshal.
func oneof[T any, P interface {
	*T
	proto.Message
}](w *writer, num protowire.Number, m P) {
	if m == nil {
		w.err = errGeneric
		return
	}
	message(w, num, m)
}

// openPorts opens a TCP or UDP message (a oneof value, isNil when its
// pointer is nil: proto.Marshal's case) and writes its two ports; the
// caller closes it. false when nothing was opened.
func (w *writer) openPorts(num protowire.Number, m proto.Message, isNil bool, src, dst uint32) (int, bool) {
	if isNil {
		w.err = errGeneric
		return 0, false
	}
	if !w.known(m) {
		return 0, false
	}
	at := w.open(num, 1)
	w.varint(1, uint64(src))
	w.varint(2, uint64(dst))
	return at, true
}

func (w *writer) layer4(num protowire.Number, l4 *flowpb.Layer4) {
	if l4 == nil || !w.known(l4) {
		return
	}
	at := w.open(num, 1)
	switch p := l4.Protocol.(type) {
	case nil:
	case *flowpb.Layer4_TCP:
		t := p.TCP
		tat, ok := w.openPorts(1, t, t == nil, t.GetSourcePort(), t.GetDestinationPort())
		if !ok {
			break
		}
		if fl := t.Flags; fl != nil && w.known(fl) {
			fat := w.open(3, 1)
			for i, set := range [...]bool{fl.FIN, fl.SYN, fl.RST, fl.PSH, fl.ACK, fl.URG, fl.ECE, fl.CWR, fl.NS} {
				w.bool(protowire.Number(i+1), set)
			}
			w.close(fat, 1)
		}
		w.close(tat, 1)
	case *flowpb.Layer4_UDP:
		u := p.UDP
		if uat, ok := w.openPorts(2, u, u == nil, u.GetSourcePort(), u.GetDestinationPort()); ok {
			w.close(uat, 1)
		}
	case *flowpb.Layer4_ICMPv4:
		oneof(w, 3, p.ICMPv4)
	case *flowpb.Layer4_ICMPv6:
		oneof(w, 4, p.ICMPv6)
	case *flowpb.Layer4_SCTP:
		oneof(w, 5, p.SCTP)
	case *flowpb.Layer4_VRRP:
		oneof(w, 6, p.VRRP)
	case *flowpb.Layer4_IGMP:
		oneof(w, 7, p.IGMP)
	default:
		w.err = errGeneric
	}
	w.close(at, 1)
}

// endpoint writes an endpoint from the encoder's cache, encoding it on
// first sight.
func (w *writer) endpoint(num protowire.Number, ep *flowpb.Endpoint) {
	if ep == nil || w.err != nil {
		return
	}
	body, ok := w.enc.endpoints[ep]
	if !ok {
		if body, w.err = proto.Marshal(ep); w.err != nil {
			return
		}
		if len(w.enc.endpoints) >= maxEndpoints {
			clear(w.enc.endpoints)
		}
		w.enc.endpoints[ep] = body
	}
	w.set(appendTag(w.b, num, protowire.BytesType))
	w.set(append(appendVarint(w.b, uint64(len(body))), body...))
}
