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
	// skipUnknown: see SkipUnknownFields.
	skipUnknown bool
}

// SkipUnknownFields makes e skip the check for unknown fields, a
// reflection call per message that cost the agent 7 % of its CPU, and
// returns e. It is for flows built field by field in this process, which
// never have any (the agent's decoder makes every flow it writes): a flow
// that has some is written without them.
func (e *Encoder) SkipUnknownFields() *Encoder {
	e.skipUnknown = true
	return e
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
	w := writer{b: b, enc: e}
	w.flow(f)
	return w.result(len(b), func() ([]byte, error) { return proto.MarshalOptions{}.MarshalAppend(b, f) })
}

// AppendFlowResponse appends the wire form of a GetFlowsResponse that
// carries f, from node, at t: what a GetFlows stream sends for a flow.
func (e *Encoder) AppendFlowResponse(b []byte, f *flowpb.Flow, node string, t *timestamppb.Timestamp) ([]byte, error) {
	w := writer{b: b, enc: e}
	// proto.Marshal writes a oneof (the flow, field 1) after the other
	// fields.
	w.string(1000, node)
	w.timestamp(1001, t)
	at := w.open(1, 2) // a flow's length takes two bytes, mostly
	w.flow(f)
	w.close(at, 2)
	return w.result(len(b), func() ([]byte, error) {
		resp := &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: node, Time: t}
		return proto.MarshalOptions{}.MarshalAppend(b, resp)
	})
}

// AppendFlowResponseWire is AppendFlowResponse for a flow already written
// by Append (flow holds its wire form): the agent writes a flow once and
// sends those bytes to the history and to every follower.
func (e *Encoder) AppendFlowResponseWire(b, flow []byte, node string, t *timestamppb.Timestamp) ([]byte, error) {
	w := writer{b: b, enc: e}
	w.string(1000, node)
	w.timestamp(1001, t)
	if w.err == nil {
		// A set oneof message is written even when empty.
		w.set(appendTag(w.b, 1, protowire.BytesType))
		w.set(protowire.AppendBytes(w.b, flow))
	}
	return w.result(len(b), func() ([]byte, error) {
		var f flowpb.Flow
		if err := proto.Unmarshal(flow, &f); err != nil {
			return nil, err
		}
		resp := &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &f}, NodeName: node, Time: t}
		return proto.MarshalOptions{}.MarshalAppend(b, resp)
	})
}

// flow writes the fields in field-number order, as proto.Marshal does.
func (w *writer) flow(f *flowpb.Flow) {
	w.timestamp(1, f.Time)
	w.varint(2, uint64(f.Verdict))
	w.varint(3, uint64(f.DropReason))
	message(w, 4, f.Ethernet)
	if ip := f.IP; ip != nil && w.known(ip) {
		at := w.open(5, 1)
		w.string(1, ip.Source)
		w.string(2, ip.Destination)
		w.varint(3, uint64(ip.IpVersion))
		w.bool(4, ip.Encrypted)
		w.string(5, ip.SourceXlated)
		w.close(at, 1)
	}
	w.layer4(6, f.L4)
	w.endpoint(8, f.Source)
	w.endpoint(9, f.Destination)
	w.varint(10, uint64(f.Type))
	w.string(11, f.NodeName)
	w.strings(13, f.SourceNames)
	w.strings(14, f.DestinationNames)
	message(w, 15, f.L7)
	w.bool(16, f.Reply)
	if et := f.EventType; et != nil && w.known(et) {
		at := w.open(19, 1)
		w.varint(1, uint64(int64(et.Type)))
		w.varint(2, uint64(int64(et.SubType)))
		w.close(at, 1)
	}
	message(w, 20, f.SourceService)
	message(w, 21, f.DestinationService)
	w.varint(22, uint64(f.TrafficDirection))
	w.varint(23, uint64(f.PolicyMatchType))
	w.varint(24, uint64(f.TraceObservationPoint))
	w.varint(25, uint64(f.DropReasonDesc))
	if r := f.IsReply; r != nil && w.known(r) {
		at := w.open(26, 1)
		w.bool(1, r.Value)
		w.close(at, 1)
	}
	w.varint(27, uint64(f.DebugCapturePoint))
	if ifc := f.Interface; ifc != nil && w.known(ifc) {
		at := w.open(28, 1)
		w.varint(1, uint64(ifc.Index))
		w.string(2, ifc.Name)
		w.close(at, 1)
	}
	w.varint(29, uint64(f.ProxyPort))
	message(w, 30, f.TraceContext)
	w.varint(31, uint64(f.SockXlatePoint))
	w.varint(32, f.SocketCookie)
	w.varint(33, f.CgroupId)
	w.string(34, f.Uuid)
	w.varint(35, uint64(f.AuthType))
	w.varint(36, uint64(f.TraceReason))
	w.strings(37, f.NodeLabels)
	message(w, 38, f.File)
	message(w, 39, f.Tunnel)
	message(w, 40, f.IpTraceId)
	message(w, 41, f.Emitter)
	for _, p := range []struct {
		num protowire.Number
		ps  []*flowpb.Policy
	}{{21001, f.EgressAllowedBy}, {21002, f.IngressAllowedBy}, {21004, f.EgressDeniedBy}, {21005, f.IngressDeniedBy}} {
		for _, pol := range p.ps {
			if pol == nil { // proto.Marshal writes an empty message
				w.open(p.num, 1)
				continue
			}
			message(w, p.num, pol)
		}
	}
	w.strings(21006, f.PolicyLog)
	message(w, 21007, f.Aggregate)
	w.string(100000, f.Summary)
	if x := f.Extensions; x != nil && w.known(x) {
		at := w.open(150000, 1)
		w.string(1, x.TypeUrl)
		w.bytes(2, x.Value)
		w.close(at, 1)
	}
	if w.err == nil && !w.enc.skipUnknown {
		w.set(append(w.b, f.ProtoReflect().GetUnknown()...))
	}
}
