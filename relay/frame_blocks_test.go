package relay

import (
	"bytes"
	"context"
	"net/netip"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/observer/history"
	"github.com/loupe-project/loupe/observer/observertest"
)

// A follower behind the real agent's history writer gets its blocks, and
// the relay's parser makes of them exactly the frames that the same
// request without blocks gets flow by flow: the same flow bytes, the same
// lost events. Flows 1 µs apart make S2 blocks (the rate of a busy node),
// 1 ms apart zstd ones.
func TestFlowBlocksMatchFlowByFlow(t *testing.T) {
	for _, gap := range []time.Duration{time.Microsecond, time.Millisecond} {
		t.Run(gap.String(), func(t *testing.T) { flowBlocksMatch(t, gap) })
	}
}

func flowBlocksMatch(t *testing.T, gap time.Duration) {
	o, addr := StartHistoryAgent(t, 32767, time.Hour)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	blocksCtx := metadata.AppendToOutgoingContext(ctx, contract.FlowBlocksHeader, contract.FlowBlocksFormat)

	// A follower that reads blocks makes the writer keep them.
	keeper := batchStream(t, blocksCtx, conn, &observerpb.GetFlowsRequest{Follow: true})
	if _, err := keeper(); err != nil { // its first batch: the writer knows it now
		t.Fatal(err)
	}
	const n = 20000
	for i := range n {
		if i == n/2 {
			o.AddLostEvents(7) // a lost entry in the ring, a lost record in a block
		}
		o.HandleEvent(datapath.MustEncodeEvent(&datapath.Event{
			TimestampNS: uint64(time.Second + time.Duration(i)*gap), Type: contract.MessageTypeTrace, ObsPoint: contract.TraceFromLxc,
			Verdict: contract.VerdictForwarded, Proto: 6, TCPFlags: 0x02, Flags: 2, EndpointID: 1,
			Src: netip.MustParseAddr("10.0.1.1"), Dst: netip.MustParseAddr("10.0.2.2"), SrcPort: uint16(30000 + i), DstPort: uint16(80 + i%2),
			Direction: contract.DirectionEgress, PacketLen: 60,
		}))
	}
	for deadline := time.Now().Add(10 * time.Second); !o.HistoryCaughtUp(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the history writer did not catch up")
		}
	}

	all := compareBlocks(t, ctx, blocksCtx, conn, &observerpb.GetFlowsRequest{First: true, Follow: true}, n+1)
	// loupe-relay follows with a since: blocks that begin before it go
	// flow by flow, filtered, and the rest whole.
	since := timestamppb.New(time.Unix(0, all[n/4+n/8].t))
	compareBlocks(t, ctx, blocksCtx, conn, &observerpb.GetFlowsRequest{Follow: true, Since: since}, n-n/4-n/8+1)
	// The last 15,000 flows begin within a block: it is sent from there.
	compareBlocks(t, ctx, blocksCtx, conn, &observerpb.GetFlowsRequest{Follow: true, Number: n - 5001}, n-5001+1)
}

// compareBlocks reads n frames of req with and without blocks and checks
// that they are the same; it returns them.
func compareBlocks(t *testing.T, ctx, blocksCtx context.Context, conn *grpc.ClientConn, req *observerpb.GetFlowsRequest, n int) []*frame {
	t.Helper()
	got, blocks := readFrames(t, batchStream(t, blocksCtx, conn, req), n)
	want, none := readFrames(t, batchStream(t, ctx, conn, req), n)
	if none != 0 {
		t.Fatalf("%d blocks to a follower that did not ask for them", none)
	}
	if blocks == 0 {
		t.Fatal("no block: the follower behind the writer got every flow alone")
	}
	for i := range want {
		g, w := got[i], want[i]
		if (g.msg == nil) != (w.msg == nil) || !bytes.Equal(g.raw, w.raw) || g.t != w.t || !bytes.Equal(g.uuid, w.uuid) || g.node != w.node ||
			(w.msg != nil && !proto.Equal(g.msg, w.msg)) {
			t.Fatalf("response %d from a block differs from the one sent alone:\n%+v\n%+v", i, g, w)
		}
	}
	t.Logf("%v: %d responses, %d blocks", req, len(got), blocks)
	return want
}

// batchStream opens a FlowBatches stream and returns its receive.
func batchStream(t *testing.T, ctx context.Context, conn *grpc.ClientConn, req *observerpb.GetFlowsRequest) func() (*frameBatch, error) {
	t.Helper()
	// As openPeerStream, with the blocks header only if ctx has it.
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{StreamName: contract.FlowBatchesStream, ServerStreams: true},
		contract.FlowBatchesMethod, grpc.ForceCodecV2(relayCodec))
	if err == nil {
		if err = s.SendMsg(req); err == nil {
			err = s.CloseSend()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return func() (*frameBatch, error) {
		fb := &frameBatch{}
		return fb, s.RecvMsg(fb)
	}
}

// readFrames receives frames, watermarks left out, until it has n, and
// counts the blocks they came in.
func readFrames(t *testing.T, next func() (*frameBatch, error), n int) (frames []*frame, blocks int) {
	t.Helper()
	for len(frames) < n {
		fb, err := next()
		if err != nil {
			t.Fatalf("after %d frames: %v", len(frames), err)
		}
		blocks += fb.blocks
		for _, f := range fb.frames {
			if !f.mark {
				frames = append(frames, f)
			}
		}
	}
	return frames[:n], blocks
}

// StartHistoryAgent serves a real observer named node-1 with a flow ring
// of bufSize and an on-disk history, on a loopback port whose address it
// returns. (Exported for the relay_test package's tests.)
func StartHistoryAgent(t *testing.T, bufSize int, retention time.Duration) (*observer.Observer, string) {
	t.Helper()
	st, err := history.Open(history.Options{Dir: t.TempDir(), Retention: retention})
	if err != nil {
		t.Fatal(err)
	}
	o, err := observer.New(observer.Config{NodeName: "node-1", BufferSize: bufSize, History: st,
		LinkName: func(uint32) string { return "lxc" }})
	if err != nil {
		t.Fatal(err)
	}
	return o, observertest.Serve(t, o)
}
