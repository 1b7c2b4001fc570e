package observer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path"
	"sync/atomic"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer/history"
	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

// rawCodec sends proto messages and receives messages as their bytes, so a
// test compares what two methods put on the wire.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := proto.Marshal(v.(proto.Message))
	return mem.BufferSlice{mem.SliceBuffer(b)}, err
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// rawStream opens method with req and returns a function that receives the
// next message's bytes.
func rawStream(t *testing.T, ctx context.Context, conn *grpc.ClientConn, method string, req *observerpb.GetFlowsRequest) func() ([]byte, error) {
	t.Helper()
	st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.SendMsg(req); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	return func() ([]byte, error) {
		var b []byte
		err := st.RecvMsg(&b)
		return b, err
	}
}

// readRaw receives every message of a finite stream.
func readRaw(t *testing.T, next func() ([]byte, error)) [][]byte {
	t.Helper()
	var out [][]byte
	for {
		b, err := next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
}

// splitBatch returns the GetFlowsResponses of a FlowBatch.
func splitBatch(t *testing.T, b []byte) [][]byte {
	t.Helper()
	var out [][]byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != contract.FlowBatchResponsesField || typ != protowire.BytesType {
			t.Fatalf("batch field %d type %d", num, typ)
		}
		v, m := protowire.ConsumeBytes(b[n:])
		if m < 0 {
			t.Fatal("batch: bad length")
		}
		out = append(out, v)
		b = b[n+m:]
	}
	return out
}

// A FlowBatches stream carries, byte for byte and in order, the responses
// a GetFlows stream sends for the same request (with the history and
// without, masked or not), in fewer gRPC messages.
func TestFlowBatchesCarryGetFlowsResponses(t *testing.T) {
	_, conn, ctx := filledServer(t, 4095, 3000)
	for _, req := range []*observerpb.GetFlowsRequest{
		{Number: 3000},
		{Number: 100, Whitelist: []*flowpb.FlowFilter{{DestinationPort: []string{"81"}}}},
		{Number: 50, FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"source.pod_name", "l4"}}},
	} {
		msgs, n := batchesCarryGetFlows(t, ctx, conn, req)
		if n == 0 {
			t.Fatalf("%v: no responses", req)
		}
		if n > 100 && msgs*20 > n {
			t.Errorf("%v: %d responses took %d messages", req, n, msgs)
		}
	}
	// A bad request is the same error.
	_, err := rawStream(t, ctx, conn, contract.FlowBatchesMethod, &observerpb.GetFlowsRequest{FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"source.nope"}}})()
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad filter: %v", err)
	}
}

// A FlowBatches stream builds its batches in buffers gRPC hands back once
// written: hundreds of batches take a few buffers, and every batch still
// carries GetFlows' bytes (a buffer reused before gRPC wrote it would not).
func TestFlowBatchesRecycleBuffers(t *testing.T) {
	o, conn, ctx := filledServer(t, 32767, 30000)
	batches, n := batchesCarryGetFlows(t, ctx, conn, &observerpb.GetFlowsRequest{Number: 30000})
	if made := o.batchBuffersMade.Load(); n != 30000 || batches < 100 || made > 2*batchBuffersKept {
		t.Fatalf("%d responses in %d batches took %d buffers", n, batches, made)
	}
}

// filledServer is an observer with a ring of size holding n flows, served,
// and a context for the test's calls.
func filledServer(t *testing.T, size, n int) (*Observer, *grpc.ClientConn, context.Context) {
	o := newTestObserver(t, size, nil)
	fill(o, n)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return o, serve(t, o), ctx
}

// batchesCarryGetFlows reads req's responses from GetFlows and from
// FlowBatches and checks that the batches carry the same bytes in the same
// order; it returns how many batches and responses there were.
func batchesCarryGetFlows(t *testing.T, ctx context.Context, conn *grpc.ClientConn, req *observerpb.GetFlowsRequest) (batches, responses int) {
	t.Helper()
	want := readRaw(t, rawStream(t, ctx, conn, observerpb.Observer_GetFlows_FullMethodName, req))
	msgs := readRaw(t, rawStream(t, ctx, conn, contract.FlowBatchesMethod, req))
	var got [][]byte
	for _, b := range msgs {
		got = append(got, splitBatch(t, b)...)
	}
	if len(got) != len(want) {
		t.Fatalf("%v: %d responses in batches, %d from GetFlows", req, len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("%v: response %d differs:\n%x\n%x", req, i, got[i], want[i])
		}
	}
	return len(msgs), len(want)
}

// A following batch stream sends what it has before it waits: one flow
// written after the stream caught up arrives on its own.
func TestFlowBatchesFollowSendsBeforeWaiting(t *testing.T) {
	o := newTestObserver(t, 4095, nil)
	fill(o, 10)
	conn := serve(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	next := rawStream(t, ctx, conn, contract.FlowBatchesMethod, &observerpb.GetFlowsRequest{Number: 10, Follow: true})
	seen := 0
	for seen < 10 {
		b, err := next()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range splitBatch(t, b) {
			var resp observerpb.GetFlowsResponse
			if err := proto.Unmarshal(r, &resp); err != nil {
				t.Fatal(err)
			}
			if resp.GetFlow() != nil {
				seen++
			}
		}
	}
	o.HandleEvent(rawEvent(evSpec{ts: 5000e9, typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 17,
		flags: 2, epID: 11, srcID: 1001, dstID: 1000, src: "10.0.1.11", dst: "10.0.1.10", sport: 4242, dport: 53, dir: contract.DirectionEgress}))
	for {
		b, err := next()
		if err != nil {
			t.Fatalf("the flow written after catching up never came: %v", err)
		}
		for _, r := range splitBatch(t, b) {
			var resp observerpb.GetFlowsResponse
			if err := proto.Unmarshal(r, &resp); err != nil {
				t.Fatal(err)
			}
			if resp.GetFlow().GetL4().GetUDP().GetSourcePort() == 4242 {
				return
			}
		}
	}
}

// BenchmarkFollowerStream reads the ring's 65,535 flows through GetFlows
// and through FlowBatches, server and client in this process: the gRPC
// work per flow that batching saves on both ends.
func BenchmarkFollowerStream(b *testing.B) {
	o := newTestObserver(b, DefaultBufferSize, nil)
	evs := benchEvents()
	for i := range DefaultBufferSize {
		o.HandleEvent(evs[i%len(evs)])
	}
	conn, ctx := serve(b, o), b.Context()
	req := &observerpb.GetFlowsRequest{Number: DefaultBufferSize}
	for _, method := range []string{observerpb.Observer_GetFlows_FullMethodName, contract.FlowBatchesMethod} {
		b.Run(path.Base(method), func(b *testing.B) {
			b.ReportAllocs()
			flows := 0
			for b.Loop() {
				st, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
				if err != nil {
					b.Fatal(err)
				}
				if err := st.SendMsg(req); err != nil {
					b.Fatal(err)
				}
				_ = st.CloseSend()
				for {
					var m []byte
					if err := st.RecvMsg(&m); errors.Is(err, io.EOF) {
						break
					} else if err != nil {
						b.Fatal(err)
					}
					flows++
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*DefaultBufferSize), "ns/flow")
			b.ReportMetric(float64(flows)/float64(b.N), "msgs/op")
		})
	}
}

// BenchmarkAgentPipeline is the agent's work per event after the ring
// buffer, with what always runs beside it in a cluster: the dashboards'
// metrics, the on-disk history, and loupe-relay following through
// GetFlows or FlowBatches (its client side in this process too). cpu-ns/event
// is the process's CPU time (user + system) per event, on every core.
func BenchmarkAgentPipeline(b *testing.B) {
	for _, method := range []string{observerpb.Observer_GetFlows_FullMethodName, contract.FlowBatchesMethod} {
		b.Run(path.Base(method), func(b *testing.B) {
			st, err := history.Open(history.Options{Dir: b.TempDir(), Retention: testRetention})
			if err != nil {
				b.Fatal(err)
			}
			o, err := New(Config{NodeName: "node-1", Metadata: metadata.Static{Snap: testSnapshot(b)}, LinkName: func(uint32) string { return "lxc" },
				Metrics: hubblemetrics.MustParse(hubblemetrics.Dashboards), History: st})
			if err != nil {
				b.Fatal(err)
			}
			conn, ctx := serve(b, o), b.Context()
			stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
			if err != nil {
				b.Fatal(err)
			}
			if err := stream.SendMsg(&observerpb.GetFlowsRequest{Follow: true}); err != nil {
				b.Fatal(err)
			}
			_ = stream.CloseSend()
			var got atomic.Int64
			go func() {
				for {
					var m []byte
					if stream.RecvMsg(&m) != nil {
						return
					}
					if method == contract.FlowBatchesMethod {
						got.Add(int64(countFlows(m, true)))
					} else {
						got.Add(int64(countFlows(m, false)))
					}
				}
			}()
			evs := benchEvents()
			// The stream starts at the head when the server takes the
			// request: measure from a flow it has.
			for got.Load() == 0 {
				o.HandleEvent(evs[0])
				time.Sleep(time.Millisecond)
			}
			got.Store(0)
			var before, after unix.Rusage
			_ = unix.Getrusage(unix.RUSAGE_SELF, &before)
			start := time.Now()
			n := 0
			for b.Loop() {
				o.HandleEvent(evs[n%len(evs)])
				n++
				if n%4096 == 0 {
					for int64(n)-got.Load() > 16384 { // within the ring: nothing lost
						time.Sleep(100 * time.Microsecond)
					}
				}
			}
			for deadline := time.Now().Add(30 * time.Second); got.Load() < int64(n) || !o.HistoryCaughtUp(); {
				if time.Now().After(deadline) {
					b.Fatalf("after 30 s the follower has %d of %d flows; history caught up: %v", got.Load(), n, o.HistoryCaughtUp())
				}
				time.Sleep(time.Millisecond)
			}
			_ = unix.Getrusage(unix.RUSAGE_SELF, &after)
			cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(n), "cpu-ns/event")
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(n), "wall-ns/event")
			b.ReportMetric(float64(after.Minflt-before.Minflt)/float64(n), "faults/event")
		})
	}
}

// countFlows counts the flows in a GetFlowsResponse, or in each response
// of a FlowBatch: watermarks and lost events are not flows.
func countFlows(b []byte, batch bool) int {
	n := 0
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return n
		}
		v := protowire.ConsumeFieldValue(num, typ, b[k:])
		if v < 0 {
			return n
		}
		if batch {
			body, _ := protowire.ConsumeBytes(b[k:])
			n += countFlows(body, false)
		} else if num == 1 && typ == protowire.BytesType {
			n++
		}
		b = b[k+v:]
	}
	return n
}

// Responses that take Send, not a flow's appendResponse (the history's
// flows and lost events), are the same bytes in a batch too.
func TestFlowBatchesCarryHistoryResponses(t *testing.T) {
	o := newHistoryObserver(t, 15, history.Options{Dir: t.TempDir()})
	conn := serve(t, o)
	fillPersisted(t, o, 0, 100) // the ring holds the last 15: the rest come from disk
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &observerpb.GetFlowsRequest{Since: flowTime(o, 0)}
	want := readRaw(t, rawStream(t, ctx, conn, observerpb.Observer_GetFlows_FullMethodName, req))
	var got [][]byte
	for _, b := range readRaw(t, rawStream(t, ctx, conn, contract.FlowBatchesMethod, req)) {
		got = append(got, splitBatch(t, b)...)
	}
	if len(want) < 100 || len(got) != len(want) {
		t.Fatalf("%d responses in batches, %d from GetFlows (want at least 100)", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("response %d differs:\n%x\n%x", i, got[i], want[i])
		}
	}
}
