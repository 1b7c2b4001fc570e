// Package flowwire writes a flow's protobuf wire form, byte for byte what
// proto.Marshal writes, at a fraction of its cost.
//
// The agent writes every flow at least twice (the on-disk history and each
// GetFlows follower), and the generic marshaller spent more of the agent's
// CPU than decoding did. The fields the datapath's flows carry are written
// here by hand; the endpoints, which flows share, are written once and
// reused; every other field goes through proto.Marshal, so a flow with
// fields this package does not know is still written correctly, only not
// faster. TestAppendMatchesProto holds the output to proto.Marshal's.
package flowwire

import (
	"errors"
	"unicode/utf8"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ErrInvalidUTF8 is returned for a string field that is not UTF-8, which
// proto3 forbids (proto.Marshal fails the same way).
var ErrInvalidUTF8 = errors.New("flowwire: string field is not valid UTF-8")

// maxEndpoints bounds the endpoint cache; it starts over when full.
const maxEndpoints = 4096

// Encoder writes flows. It keeps the encodings of the endpoints it has
// seen, keyed by pointer: the decoder shares one immutable Endpoint between
// all flows of a pod, and a cached key keeps its endpoint alive, so a
// pointer is never reused for another endpoint while it is cached. An
// Encoder is not safe for concurrent use.
type Encoder struct {
	endpoints map[*flowpb.Endpoint][]byte
}

// NewEncoder returns an Encoder with an empty endpoint cache.
func NewEncoder() *Encoder {
	return &Encoder{endpoints: make(map[*flowpb.Endpoint][]byte)}
}

// Reset forgets the cached endpoints, for when endpoints may have been
// changed in place (none of loupe's code does).
func (e *Encoder) Reset() { clear(e.endpoints) }

// Append appends f's wire form to b. On error (a string that is not
// UTF-8, as proto.Marshal reports), b is returned as it was.
func (e *Encoder) Append(b []byte, f *flowpb.Flow) ([]byte, error) {
	start := len(b)
	out, err := e.appendFlow(b, f)
	if errors.Is(err, errGeneric) {
		return proto.MarshalOptions{}.MarshalAppend(b[:start], f)
	}
	if err != nil {
		return b[:start], err
	}
	return out, nil
}

// AppendFlowResponse appends the wire form of a GetFlowsResponse that
// carries f, from node, at t: what a GetFlows stream sends for a flow.
func (e *Encoder) AppendFlowResponse(b []byte, f *flowpb.Flow, node string, t *timestamppb.Timestamp) ([]byte, error) {
	start := len(b)
	if utf8.ValidString(node) && (t == nil || len(t.ProtoReflect().GetUnknown()) == 0) {
		// proto.Marshal writes a oneof (the flow, field 1) after the
		// other fields.
		b = appendStringField(b, 1000, node)
		if t != nil {
			var tat int
			b, tat = openMessage(b, 1001)
			b = appendVarintField(b, 1, uint64(t.Seconds))
			b = appendVarintField(b, 2, uint64(int64(t.Nanos)))
			b = closeMessage(b, tat)
		}
		var at int
		b, at = openMessageN(b, 1, 2)
		out, err := e.appendFlow(b, f)
		if err == nil {
			return closeMessageN(out, at, 2), nil
		}
		if !errors.Is(err, errGeneric) {
			return b[:start], err
		}
	}
	resp := &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: node, Time: t}
	out, err := proto.MarshalOptions{}.MarshalAppend(b[:start], resp)
	if err != nil {
		return b[:start], err
	}
	return out, nil
}

// errGeneric sends a flow this package cannot write by hand (unknown
// fields in a message it writes, a nil element in a repeated field) to
// proto.Marshal; it never leaves the package.
var errGeneric = errors.New("flowwire: not written by hand")

// appendFlow writes the fields in field-number order, as proto.Marshal does.
func (e *Encoder) appendFlow(b []byte, f *flowpb.Flow) ([]byte, error) {
	var err error
	if t := f.Time; t != nil { // 1
		if len(t.ProtoReflect().GetUnknown()) > 0 {
			return nil, errGeneric
		}
		var at int
		b, at = openMessage(b, 1)
		b = appendVarintField(b, 1, uint64(t.Seconds))
		b = appendVarintField(b, 2, uint64(int64(t.Nanos)))
		b = closeMessage(b, at)
	}
	b = appendVarintField(b, 2, uint64(f.Verdict))
	b = appendVarintField(b, 3, uint64(f.DropReason))
	if b, err = appendMessage(b, 4, f.Ethernet); err != nil {
		return nil, err
	}
	if ip := f.IP; ip != nil { // 5
		if len(ip.ProtoReflect().GetUnknown()) > 0 {
			return nil, errGeneric
		}
		if !validUTF8(ip.Source, ip.Destination, ip.SourceXlated) {
			return nil, ErrInvalidUTF8
		}
		var at int
		b, at = openMessage(b, 5)
		b = appendStringField(b, 1, ip.Source)
		b = appendStringField(b, 2, ip.Destination)
		b = appendVarintField(b, 3, uint64(ip.IpVersion))
		b = appendBoolField(b, 4, ip.Encrypted)
		b = appendStringField(b, 5, ip.SourceXlated)
		b = closeMessage(b, at)
	}
	if b, err = appendLayer4(b, f.L4); err != nil { // 6
		return nil, err
	}
	if b, err = e.appendEndpoint(b, 8, f.Source); err != nil {
		return nil, err
	}
	if b, err = e.appendEndpoint(b, 9, f.Destination); err != nil {
		return nil, err
	}
	b = appendVarintField(b, 10, uint64(f.Type))
	if !utf8.ValidString(f.NodeName) {
		return nil, ErrInvalidUTF8
	}
	b = appendStringField(b, 11, f.NodeName)
	if b, err = appendStrings(b, 13, f.SourceNames); err != nil {
		return nil, err
	}
	if b, err = appendStrings(b, 14, f.DestinationNames); err != nil {
		return nil, err
	}
	if b, err = appendMessage(b, 15, f.L7); err != nil {
		return nil, err
	}
	b = appendBoolField(b, 16, f.Reply)
	if et := f.EventType; et != nil { // 19
		if len(et.ProtoReflect().GetUnknown()) > 0 {
			return nil, errGeneric
		}
		var at int
		b, at = openMessage(b, 19)
		b = appendVarintField(b, 1, uint64(int64(et.Type)))
		b = appendVarintField(b, 2, uint64(int64(et.SubType)))
		b = closeMessage(b, at)
	}
	if b, err = appendMessage(b, 20, f.SourceService); err != nil {
		return nil, err
	}
	if b, err = appendMessage(b, 21, f.DestinationService); err != nil {
		return nil, err
	}
	b = appendVarintField(b, 22, uint64(f.TrafficDirection))
	b = appendVarintField(b, 23, uint64(f.PolicyMatchType))
	b = appendVarintField(b, 24, uint64(f.TraceObservationPoint))
	b = appendVarintField(b, 25, uint64(f.DropReasonDesc))
	if r := f.IsReply; r != nil { // 26
		if len(r.ProtoReflect().GetUnknown()) > 0 {
			return nil, errGeneric
		}
		var at int
		b, at = openMessage(b, 26)
		b = appendBoolField(b, 1, r.Value)
		b = closeMessage(b, at)
	}
	b = appendVarintField(b, 27, uint64(f.DebugCapturePoint))
	if ifc := f.Interface; ifc != nil { // 28
		if len(ifc.ProtoReflect().GetUnknown()) > 0 {
			return nil, errGeneric
		}
		if !utf8.ValidString(ifc.Name) {
			return nil, ErrInvalidUTF8
		}
		var at int
		b, at = openMessage(b, 28)
		b = appendVarintField(b, 1, uint64(ifc.Index))
		b = appendStringField(b, 2, ifc.Name)
		b = closeMessage(b, at)
	}
	b = appendVarintField(b, 29, uint64(f.ProxyPort))
	if b, err = appendMessage(b, 30, f.TraceContext); err != nil {
		return nil, err
	}
	b = appendVarintField(b, 31, uint64(f.SockXlatePoint))
	b = appendVarintField(b, 32, f.SocketCookie)
	b = appendVarintField(b, 33, f.CgroupId)
	if !utf8.ValidString(f.Uuid) {
		return nil, ErrInvalidUTF8
	}
	b = appendStringField(b, 34, f.Uuid)
	b = appendVarintField(b, 35, uint64(f.AuthType))
	b = appendVarintField(b, 36, uint64(f.TraceReason))
	if b, err = appendStrings(b, 37, f.NodeLabels); err != nil {
		return nil, err
	}
	if b, err = appendMessage(b, 38, f.File); err != nil {
		return nil, err
	}
	if b, err = appendMessage(b, 39, f.Tunnel); err != nil {
		return nil, err
	}
	if b, err = appendMessage(b, 40, f.IpTraceId); err != nil {
		return nil, err
	}
	if b, err = appendMessage(b, 41, f.Emitter); err != nil {
		return nil, err
	}
	if b, err = appendPolicies(b, 21001, f.EgressAllowedBy); err != nil {
		return nil, err
	}
	if b, err = appendPolicies(b, 21002, f.IngressAllowedBy); err != nil {
		return nil, err
	}
	if b, err = appendPolicies(b, 21004, f.EgressDeniedBy); err != nil {
		return nil, err
	}
	if b, err = appendPolicies(b, 21005, f.IngressDeniedBy); err != nil {
		return nil, err
	}
	if b, err = appendStrings(b, 21006, f.PolicyLog); err != nil {
		return nil, err
	}
	if b, err = appendMessage(b, 21007, f.Aggregate); err != nil {
		return nil, err
	}
	if !utf8.ValidString(f.Summary) {
		return nil, ErrInvalidUTF8
	}
	b = appendStringField(b, 100000, f.Summary)
	if x := f.Extensions; x != nil { // 150000
		if len(x.ProtoReflect().GetUnknown()) > 0 {
			return nil, errGeneric
		}
		if !utf8.ValidString(x.TypeUrl) {
			return nil, ErrInvalidUTF8
		}
		var at int
		b, at = openMessage(b, 150000)
		b = appendStringField(b, 1, x.TypeUrl)
		if len(x.Value) > 0 {
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendBytes(b, x.Value)
		}
		b = closeMessage(b, at)
	}
	return append(b, f.ProtoReflect().GetUnknown()...), nil
}
