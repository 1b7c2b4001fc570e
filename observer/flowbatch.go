package observer

import (
	"sync/atomic"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/loupe-project/loupe/contract"
)

// flowBatchBytes is the size at which a FlowBatches stream sends its
// batch (contract.FlowBatchesMethod); it also sends whenever GetFlows is
// about to wait for flows, so batching adds no latency.
const flowBatchBytes = 32 << 10

// registerFlowBatches adds the method to a wireCodec server.
func registerFlowBatches(s *grpc.Server, obs *observerServer) {
	desc := grpc.StreamDesc{StreamName: contract.FlowBatchesStream, ServerStreams: true}
	desc.Handler = func(_ any, stream grpc.ServerStream) error {
		req := &observerpb.GetFlowsRequest{}
		if err := stream.RecvMsg(req); err != nil {
			return err
		}
		bs := &batchStream{ServerStream: stream, bufs: batchBuffers{free: make(chan *[]byte, batchBuffersKept), made: &obs.o.batchBuffersMade}}
		if md, ok := metadata.FromIncomingContext(stream.Context()); ok {
			bs.blocks = acceptsBlocks(md)
		}
		bs.batch = bs.bufs.next()
		err := obs.GetFlows(req, bs)
		if ferr := bs.flush(); err == nil {
			err = ferr
		}
		return err
	}
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: contract.FlowBatchesService,
		HandlerType: (*any)(nil),
		Streams:     []grpc.StreamDesc{desc},
	}, obs)
}

// batchStream is the GetFlows stream of a FlowBatches call: what GetFlows
// sends is appended to the batch, which goes out when full or on flush.
type batchStream struct {
	grpc.ServerStream
	batch []byte
	bufs  batchBuffers
	// blocks: the client reads FlowBlocks (see flowblocks.go).
	blocks bool
}

// batchBuffersKept is how many written batches a stream keeps for the
// next ones: gRPC holds a batch until its transport has written it, and
// a few cover the batches in flight.
const batchBuffersKept = 4

// batchBuffers recycles a stream's batch buffers: gRPC hands each back
// (Put) once its transport has written it, and the next batch is built in
// it. Before, each batch went to gRPC as a clone, one 32 KiB allocation
// and one more copy of every flow (4–5 % of the agent's CPU in the events
// bench); gRPC's own pool clears a buffer on Get, which cost as much.
type batchBuffers struct {
	free chan *[]byte
	made *atomic.Uint64 // buffers allocated, for tests: Observer.batchBuffersMade
}

// Get is for mem.BufferPool; the stream takes buffers with next.
func (p *batchBuffers) Get(n int) *[]byte {
	b := make([]byte, n)
	return &b
}

// Put keeps a buffer gRPC is done with, unless enough are kept.
func (p *batchBuffers) Put(b *[]byte) {
	select {
	case p.free <- b:
	default:
	}
}

// next is an empty buffer for the next batch.
func (p *batchBuffers) next() []byte {
	select {
	case b := <-p.free:
		return (*b)[:0]
	default:
		p.made.Add(1)
		return make([]byte, 0, flowBatchBytes+flowBatchBytes/2)
	}
}

var _ grpc.ServerStreamingServer[observerpb.GetFlowsResponse] = (*batchStream)(nil)

// Send adds a response to the batch, marshalled in place.
func (b *batchStream) Send(r *observerpb.GetFlowsResponse) error {
	start := len(b.batch)
	at := b.open()
	next, err := proto.MarshalOptions{}.MarshalAppend(b.batch, r)
	if err != nil {
		b.batch = b.batch[:start]
		return status.Errorf(codes.Internal, "response: %v", err)
	}
	return b.close(at, next)
}

// SendMsg keeps a response that bypasses Send in the batch too (flows take
// appendResponse, see flowSender), so none overtakes the batch.
func (b *batchStream) SendMsg(m any) error {
	if r, ok := m.(*observerpb.GetFlowsResponse); ok {
		return b.Send(r)
	}
	return status.Errorf(codes.Internal, "flow batch: cannot send %T", m)
}

// open starts a response in the batch, its length to come in the two
// bytes before the returned offset (a response's length takes two bytes,
// mostly; close moves the response when it does not).
func (b *batchStream) open() int {
	b.batch = protowire.AppendTag(b.batch, contract.FlowBatchResponsesField, protowire.BytesType)
	b.batch = append(b.batch, 0, 0)
	return len(b.batch)
}

// close ends the response open started at at: next is the batch with the
// response appended. The batch is sent once it is full.
func (b *batchStream) close(at int, next []byte) error {
	n := len(next) - at
	if protowire.SizeVarint(uint64(n)) == 2 {
		protowire.AppendVarint(next[at-2:at-2], uint64(n))
	} else {
		body := append([]byte(nil), next[at:]...)
		next = protowire.AppendBytes(next[:at-2], body)
	}
	b.batch = next
	if len(b.batch) >= flowBatchBytes {
		return b.flush()
	}
	return nil
}

// flush sends the batch, if any.
func (b *batchStream) flush() error {
	if len(b.batch) == 0 {
		return nil
	}
	// gRPC owns the batch until it has written it and hands it back to
	// b.bufs; the next batch goes into another buffer.
	out := b.batch
	b.batch = b.bufs.next()
	return b.ServerStream.SendMsg(&encodedResponse{buf: mem.BufferSlice{mem.NewBuffer(&out, &b.bufs)}})
}

// flushBeforeWait sends a batch stream's pending responses: GetFlows
// calls it before it waits for flows.
func flushBeforeWait(stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) error {
	if b, ok := stream.(*batchStream); ok {
		return b.flush()
	}
	return nil
}

// appendResponse is how flowSender adds a flow's response to a batch
// stream: write appends it to the batch in place, without the pooled copy
// of a GetFlows send.
func (b *batchStream) appendResponse(write responseWriter, e *entry, out *flowpb.Flow) error {
	start := len(b.batch)
	at := b.open()
	next, err := write(b.batch, e, out)
	if err != nil {
		b.batch = b.batch[:start]
		return err
	}
	return b.close(at, next)
}
