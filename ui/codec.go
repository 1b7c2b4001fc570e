package ui

import (
	"slices"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Field numbers the codec looks at (flow.proto, observer.proto).
const (
	respFlow        = 1 // GetFlowsResponse.flow, in the response_types oneof
	respNodeStatus  = 2
	respLostEvents  = 3
	flowSource      = 8 // Flow.source
	flowDestination = 9 // Flow.destination
)

// maxSharedEndpoints bounds an endpointCodec's cache; it starts over when
// full.
const maxSharedEndpoints = 4096

var protoCodec = encoding.GetCodecV2(protoenc.Name)

// endpointCodec is the map's gRPC codec for the relay's flow stream. It
// decodes each distinct endpoint once and shares it between the flows
// that carry it: a pod's flows all carry the same endpoint bytes (labels,
// workloads), and decoding their strings again for every flow was most of
// the relay's CPU at high flow rates, since the map follows every flow.
// Shared endpoints must not be modified; the map only reads flows. What
// it decodes equals proto.Unmarshal's result (FuzzEndpointCodec); every
// other message, and any response it does not expect, goes through the
// proto codec. One per stream: it is not safe for concurrent use.
type endpointCodec struct {
	endpoints map[string]*flowpb.Endpoint
	top, rest []byte // scratch: the response without its flow, the flow without its endpoints
}

func newEndpointCodec() *endpointCodec {
	return &endpointCodec{endpoints: map[string]*flowpb.Endpoint{}}
}

func (c *endpointCodec) Name() string { return protoenc.Name }

func (c *endpointCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (c *endpointCodec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*observerpb.GetFlowsResponse)
	if !ok {
		return protoCodec.Unmarshal(data, v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return c.unmarshal(buf.ReadOnlyData(), resp)
}

// unmarshal decodes b into resp as proto.Unmarshal does, with the flow's
// endpoints from the cache.
func (c *endpointCodec) unmarshal(b []byte, resp *observerpb.GetFlowsResponse) error {
	top, rest, ok := pick(c.top[:0], b, respFlow, 0, respNodeStatus, respLostEvents)
	c.top = rest
	if !ok || top[0] == nil {
		return proto.Unmarshal(b, resp)
	}
	eps, body, ok := pick(c.rest[:0], top[0], flowSource, flowDestination)
	c.rest = body
	if !ok {
		return proto.Unmarshal(b, resp)
	}
	f := new(flowpb.Flow)
	if err := proto.Unmarshal(body, f); err != nil {
		return err
	}
	var err error
	if f.Source, err = c.endpoint(eps[0]); err != nil {
		return err
	}
	if f.Destination, err = c.endpoint(eps[1]); err != nil {
		return err
	}
	if err := proto.Unmarshal(rest, resp); err != nil {
		return err
	}
	resp.ResponseTypes = &observerpb.GetFlowsResponse_Flow{Flow: f}
	return nil
}

// pick appends message msg to out without its fields first and second (0:
// none), whose values it returns (nil when absent). ok is false when the
// rest would not decode as msg does: a picked field repeated (a message
// field's occurrences merge) or not length-delimited, a field of others
// present (another member of a picked field's oneof: the last one wins),
// or msg malformed.
func pick(out, msg []byte, first, second protowire.Number, others ...protowire.Number) (vals [2][]byte, rest []byte, ok bool) {
	for off := 0; off < len(msg); {
		n, typ, tagLen := protowire.ConsumeTag(msg[off:])
		if tagLen < 0 {
			return vals, out, false
		}
		valLen := protowire.ConsumeFieldValue(n, typ, msg[off+tagLen:])
		if valLen < 0 {
			return vals, out, false
		}
		i := -1
		switch n {
		case first:
			i = 0
		case second:
			i = 1
		}
		switch {
		case i >= 0:
			if vals[i] != nil || typ != protowire.BytesType {
				return vals, out, false
			}
			vals[i], _ = protowire.ConsumeBytes(msg[off+tagLen:])
			if vals[i] == nil {
				vals[i] = []byte{} // present, empty
			}
		case slices.Contains(others, n):
			return vals, out, false
		default:
			out = append(out, msg[off:off+tagLen+valLen]...)
		}
		off += tagLen + valLen
	}
	return vals, out, true
}

// endpoint is the shared endpoint of b (nil for none).
func (c *endpointCodec) endpoint(b []byte) (*flowpb.Endpoint, error) {
	if b == nil {
		return nil, nil
	}
	if ep, ok := c.endpoints[string(b)]; ok {
		return ep, nil
	}
	ep := new(flowpb.Endpoint)
	if err := proto.Unmarshal(b, ep); err != nil {
		return nil, err
	}
	if len(c.endpoints) >= maxSharedEndpoints {
		clear(c.endpoints)
	}
	c.endpoints[string(b)] = ep
	return ep, nil
}
