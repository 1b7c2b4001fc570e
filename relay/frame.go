package relay

import (
	"errors"
	"fmt"
	"slices"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/observer/flowwire"
	"github.com/loupe-project/loupe/observer/history"
)

// frame is one GetFlowsResponse on its way through the relay. A flow stays
// in the bytes the agent sent: the relay reads only the fields it orders and
// resumes by, and forwards the bytes untouched, which saves a full decode
// and re-encode per flow. Other responses (lost events, node status) are
// decoded into msg.
type frame struct {
	raw []byte
	// buf, when set, holds raw in gRPC's pooled buffer: received without a
	// copy and handed back to gRPC to send, which frees it.
	buf  mem.BufferSlice
	t    int64  // flow time (else response time), unix ns; 0 if absent
	uuid []byte // within raw: no copy per flow
	node bool   // the response names its node
	// mark: a watermark, a response with no type whose time the peer's
	// later flows will not be older than (observer.WatermarkInterval).
	mark bool
	msg  *observerpb.GetFlowsResponse
}

// GetFlowsResponse field numbers (api/v1/observer/observer.proto).
const (
	respFlow       = 1
	respNodeStatus = 2
	respLostEvents = 3
	respNodeName   = 1000
	respTime       = 1001
	flowTime       = 1  // flow.Flow.time
	flowUUID       = 34 // flow.Flow.uuid
)

var errMalformed = errors.New("malformed GetFlowsResponse")

// parseFrame reads what the relay needs from an encoded GetFlowsResponse;
// b must not be modified afterwards.
func parseFrame(b []byte) (*frame, error) {
	f := &frame{raw: b}
	var respT int64
	isFlow, other, typed := false, false, false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errMalformed
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == respFlow || num == respTime) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errMalformed
			}
			b = b[n:]
			if num == respFlow {
				isFlow = true
				if err := f.parseFlow(v); err != nil {
					return nil, err
				}
			} else if respT, n = parseTimestamp(v); n < 0 {
				return nil, errMalformed
			}
			continue
		}
		switch num {
		case respNodeStatus, respLostEvents:
			other = true
		case respNodeName:
			f.node = true
		}
		if num < respNodeName {
			typed = true // a response type the relay does not know
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, errMalformed
		}
		b = b[n:]
	}
	if f.t == 0 {
		f.t = respT
	}
	if !isFlow && !other && !typed {
		f.raw, f.mark = nil, true
		return f, nil
	}
	if other || !isFlow {
		f.msg = &observerpb.GetFlowsResponse{}
		if err := proto.Unmarshal(f.raw, f.msg); err != nil {
			return nil, fmt.Errorf("%w: %w", errMalformed, err)
		}
		f.raw = nil
	}
	return f, nil
}

func (f *frame) parseFlow(b []byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == flowTime || num == flowUUID) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			if num == flowUUID {
				f.uuid = v
			} else if f.t, n = parseTimestamp(v); n < 0 {
				return errMalformed
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	return nil
}

// parseTimestamp decodes a google.protobuf.Timestamp into unix ns.
func parseTimestamp(b []byte) (int64, int) {
	var sec, nanos int64
	total := len(b)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, -1
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, -1
			}
			b = b[n:]
			if num == 1 {
				sec = int64(v)
			} else {
				nanos = int64(int32(v))
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, -1
		}
		b = b[n:]
	}
	return sec*1e9 + nanos, total
}

// setNodeName names the node of a flow that arrived without one. Appending
// a field to an encoded message sets it (the last value wins).
func (f *frame) setNodeName(name string) {
	if f.node || name == "" {
		return
	}
	if f.msg != nil {
		f.msg.NodeName = name
	} else {
		// Clipped: never write into the pooled buffer past the message.
		f.raw = protowire.AppendString(protowire.AppendTag(slices.Clip(f.raw), respNodeName, protowire.BytesType), name)
		f.release()
	}
	f.node = true
}

// codec is the proto codec, except that it decodes into a frame and sends a
// flow frame's bytes as they came.
type codec struct{ encoding.CodecV2 }

var relayCodec = codec{encoding.GetCodecV2(protoenc.Name)}

// release lets go of the pooled buffer once raw no longer needs it; a frame
// dropped without release is simply collected.
func (f *frame) release() {
	if f.buf != nil {
		f.buf.Free()
		f.buf = nil
	}
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if f, ok := v.(*frame); ok {
		if f.msg != nil {
			return c.CodecV2.Marshal(f.msg)
		}
		if b := f.buf; b != nil {
			f.buf = nil // gRPC frees it once sent
			return b, nil
		}
		return mem.BufferSlice{mem.SliceBuffer(f.raw)}, nil
	}
	return c.CodecV2.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if b, ok := v.(*frameBatch); ok {
		return b.parse(data.Materialize())
	}
	f, ok := v.(*frame)
	if !ok {
		return c.CodecV2.Unmarshal(data, v)
	}
	if len(data) != 1 {
		parsed, err := parseFrame(data.Materialize())
		if err != nil {
			return err
		}
		*f = *parsed
		return nil
	}
	// One buffer: keep it (gRPC frees its own reference after this call).
	parsed, err := parseFrame(data[0].ReadOnlyData())
	if err != nil {
		return err
	}
	*f = *parsed
	if f.raw != nil {
		data.Ref()
		f.buf = data
	}
	return nil
}

// frameBatch is one message of a FlowBatches stream
// (contract.FlowBatchesMethod): the frames of its responses and of the
// records of its history blocks, in order, each within the one buffer the
// message was received into or, for a block, one buffer of its own.
type frameBatch struct {
	frames []*frame
	blocks int // history blocks in the message

	raw  []byte                // a block's uncompressed records, reused
	recs []history.Record      // a block's records, within raw
	ts   timestamppb.Timestamp // a record's time, reused
}

func (fb *frameBatch) parse(b []byte) error {
	fb.frames, fb.blocks = fb.frames[:0], 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || typ != protowire.BytesType || (num != contract.FlowBatchResponsesField && num != contract.FlowBatchBlocksField) {
			return fmt.Errorf("%w: flow batch field %d", errMalformed, num)
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			return errMalformed
		}
		b = b[n+m:]
		if num == contract.FlowBatchBlocksField {
			if err := fb.parseBlock(v); err != nil {
				return err
			}
			continue
		}
		f, err := parseFrame(v)
		if err != nil {
			return err
		}
		fb.frames = append(fb.frames, f)
	}
	return nil
}

// parseBlock adds the frames of a FlowBlock: for each record, the
// GetFlowsResponse the agent would have sent for it alone
// (contract.FlowBatchBlocksField), its bytes written by flowwire as the
// agent writes them.
func (fb *frameBatch) parseBlock(b []byte) error {
	var node string
	var block []byte
	var from uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if typ == protowire.VarintType && num == contract.FlowBlockFromField {
			if from, n = protowire.ConsumeVarint(b); n < 0 {
				return errMalformed
			}
			b = b[n:]
			continue
		}
		if typ == protowire.BytesType && (num == contract.FlowBlockNodeField || num == contract.FlowBlockDataField) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			if num == contract.FlowBlockNodeField {
				node = string(v)
			} else {
				block = v
			}
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	if block == nil {
		return fmt.Errorf("%w: flow block without a block", errMalformed)
	}
	fb.recs = fb.recs[:0]
	var err error
	fb.raw, err = history.DecodeBlock(block, fb.raw, func(rec *history.Record) bool {
		if rec.Seq >= from {
			fb.recs = append(fb.recs, *rec) // Data stays valid in fb.raw
		}
		return true
	})
	if err != nil {
		return fmt.Errorf("%w: flow block: %w", errMalformed, err)
	}
	// The flows' responses go into one buffer of the size they take
	// (growing it by appending cost the relay more than the rest of the
	// block), sliced once it is written.
	size := 0
	for i := range fb.recs {
		size += len(fb.recs[i].Data) + len(node) + 32 // tags, lengths, time
	}
	out := make([]byte, 0, size)
	type span struct{ start, end int }
	spans := make([]span, len(fb.recs))
	var enc flowwire.Encoder
	for i := range fb.recs {
		rec := &fb.recs[i]
		if rec.Kind == history.KindLost {
			continue
		}
		t := time.Unix(0, rec.Time)
		fb.ts.Seconds, fb.ts.Nanos = t.Unix(), int32(t.Nanosecond())
		start := len(out)
		if out, err = enc.AppendFlowResponseWire(out, rec.Data, node, &fb.ts); err != nil {
			return fmt.Errorf("%w: flow block: %w", errMalformed, err)
		}
		spans[i] = span{start, len(out)}
	}
	for i := range fb.recs {
		rec := &fb.recs[i]
		if rec.Kind == history.KindLost {
			le := &flowpb.LostEvent{}
			if err := proto.Unmarshal(rec.Data, le); err != nil {
				return fmt.Errorf("%w: flow block: %w", errMalformed, err)
			}
			fb.frames = append(fb.frames, &frame{t: rec.Time, node: node != "", msg: &observerpb.GetFlowsResponse{
				ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: le}, NodeName: node,
				Time: timestamppb.New(time.Unix(0, rec.Time))}})
			continue
		}
		sp := spans[i]
		f, err := parseFrame(out[sp.start:sp.end:sp.end])
		if err != nil {
			return err
		}
		fb.frames = append(fb.frames, f)
	}
	fb.blocks++
	return nil
}
