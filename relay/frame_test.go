package relay

import (
	"fmt"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/observer/history"
)

func encode(t testing.TB, r *observerpb.GetFlowsResponse) []byte {
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseFrame(t *testing.T) {
	ts := time.Date(2026, 7, 1, 12, 0, 0, 123456789, time.UTC)
	flow := &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{
		Time: timestamppb.New(ts), Uuid: "u-1", Verdict: flowpb.Verdict_DROPPED, Source: &flowpb.Endpoint{PodName: "a"},
	}}}
	f, err := parseFrame(encode(t, flow))
	if err != nil {
		t.Fatal(err)
	}
	if f.msg != nil || f.t != ts.UnixNano() || string(f.uuid) != "u-1" || f.node {
		t.Fatalf("flow frame: %+v", f)
	}
	f.setNodeName("node-9")
	var back observerpb.GetFlowsResponse
	if err := proto.Unmarshal(f.raw, &back); err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(flow).(*observerpb.GetFlowsResponse)
	want.NodeName = "node-9"
	if !proto.Equal(&back, want) {
		t.Fatalf("after setNodeName: %v, want %v", &back, want)
	}

	// Without a flow time, the response time orders it.
	noTime := &observerpb.GetFlowsResponse{Time: timestamppb.New(ts), NodeName: "n",
		ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{Uuid: "u-2"}}}
	if f, err := parseFrame(encode(t, noTime)); err != nil || f.t != ts.UnixNano() || !f.node {
		t.Fatalf("response time: %+v %v", f, err)
	}

	status := &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_NodeStatus{
		NodeStatus: &relaypb.NodeStatusEvent{StateChange: relaypb.NodeState_NODE_GONE, NodeNames: []string{"x"}}}}
	if f, err := parseFrame(encode(t, status)); err != nil || f.msg == nil || !proto.Equal(f.msg, status) || f.raw != nil {
		t.Fatalf("status frame: %+v %v", f, err)
	}

	if _, err := parseFrame([]byte{0x0a, 0x05, 0x01}); err == nil {
		t.Fatal("truncated flow accepted")
	}
}

// FuzzParseFrame feeds the agent-facing decoder arbitrary bytes: it must not
// panic, and what it accepts as a flow must be what protobuf decodes.
func FuzzParseFrame(f *testing.F) {
	f.Add(encode(f, &observerpb.GetFlowsResponse{NodeName: "n", ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{
		Time: timestamppb.Now(), Uuid: "u", IP: &flowpb.IP{Source: "10.0.0.1"}}}}))
	f.Add(encode(f, &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{
		LostEvents: &flowpb.LostEvent{NumEventsLost: 3}}}))
	f.Add(encode(f, &observerpb.GetFlowsResponse{NodeName: "n", Time: timestamppb.Now()})) // a watermark
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := parseFrame(append([]byte(nil), b...))
		if err != nil || fr.msg != nil {
			return
		}
		var m observerpb.GetFlowsResponse
		if proto.Unmarshal(b, &m) != nil {
			return // parseFrame reads only what it needs; full validity is the client's
		}
		if fr.mark {
			if m.GetResponseTypes() != nil || fr.t != m.GetTime().GetSeconds()*1e9+int64(m.GetTime().GetNanos()) {
				t.Fatalf("watermark at %d from %v", fr.t, &m)
			}
			return
		}
		if m.GetFlow() != nil && m.GetFlow().GetUuid() != string(fr.uuid) {
			t.Fatalf("uuid %q, protobuf says %q", fr.uuid, m.GetFlow().GetUuid())
		}
		fr.setNodeName("relay-test")
		var back observerpb.GetFlowsResponse
		if err := proto.Unmarshal(fr.raw, &back); err != nil {
			t.Fatalf("after setNodeName: %v", err)
		}
		if m.GetNodeName() == "" && back.GetNodeName() != "relay-test" {
			t.Fatalf("node name %q", back.GetNodeName())
		}
	})
}

// A FlowBatch is the frames of its responses and blocks, in order: each
// response's what parseFrame makes of it alone, each block's what it makes
// alone; anything else is an error.
func FuzzParseFrameBatch(f *testing.F) {
	one := encode(f, &observerpb.GetFlowsResponse{NodeName: "n", ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{
		Time: timestamppb.Now(), Uuid: "u"}}})
	batch := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), one)
	f.Add(append(batch, batch...))
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x00})
	blk := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), testFlowBlock(f, "node-1"))
	f.Add(append(append(slices.Clone(blk), batch...), blk...))
	f.Fuzz(func(t *testing.T, b []byte) {
		var fb frameBatch
		err := fb.parse(append([]byte(nil), b...))
		var want []*frame
		for rest := b; len(rest) > 0; {
			num, typ, n := protowire.ConsumeTag(rest)
			if n < 0 || (num != 1 && num != 2) || typ != protowire.BytesType {
				want = nil
				break
			}
			v, m := protowire.ConsumeBytes(rest[n:])
			if m < 0 {
				want = nil
				break
			}
			rest = rest[n+m:]
			if num == 2 {
				var alone frameBatch
				if alone.parseBlock(append([]byte(nil), v...)) != nil {
					want = nil
					break
				}
				want = append(want, alone.frames...)
				continue
			}
			fr, ferr := parseFrame(append([]byte(nil), v...))
			if ferr != nil {
				want = nil
				break
			}
			want = append(want, fr)
		}
		if err != nil {
			return
		}
		if len(fb.frames) != len(want) {
			t.Fatalf("%d frames, each response alone makes %d", len(fb.frames), len(want))
		}
		for i, fr := range fb.frames {
			w := want[i]
			if fr.t != w.t || string(fr.uuid) != string(w.uuid) || fr.mark != w.mark || string(fr.raw) != string(w.raw) || !proto.Equal(fr.msg, w.msg) {
				t.Fatalf("frame %d: %+v, alone %+v", i, fr, w)
			}
		}
	})
}

// testFlowBlock is a FlowBlock of a history block the history store wrote:
// two flows and a lost event.
func testFlowBlock(t testing.TB, node string) []byte {
	st, err := history.Open(history.Options{Dir: t.TempDir(), Retention: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UnixNano()
	var recs []history.Record
	for i := range 2 {
		b, _ := proto.Marshal(&flowpb.Flow{Time: timestamppb.New(time.Unix(0, now+int64(i))), Uuid: fmt.Sprint("u-", i)})
		recs = append(recs, history.Record{Kind: history.KindFlow, Seq: uint64(i), Time: now + int64(i), Data: b})
	}
	lost, _ := proto.Marshal(&flowpb.LostEvent{Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: 3})
	recs = append(recs, history.Record{Kind: history.KindLost, Seq: 2, Time: now + 2, Data: lost})
	var block []byte
	if err := st.AppendEach(1, recs, func(b []byte) { block = slices.Clone(b) }); err != nil {
		t.Fatal(err)
	}
	fb := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), node)
	return protowire.AppendBytes(protowire.AppendTag(fb, 2, protowire.BytesType), block)
}
