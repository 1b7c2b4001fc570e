package relay

import (
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
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

// A FlowBatch is the frames of its responses, in order: each one what
// parseFrame makes of the response alone; anything else is an error.
func FuzzParseFrameBatch(f *testing.F) {
	one := encode(f, &observerpb.GetFlowsResponse{NodeName: "n", ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{
		Time: timestamppb.Now(), Uuid: "u"}}})
	batch := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), one)
	f.Add(append(batch, batch...))
	f.Add([]byte{})
	f.Add([]byte{0x12, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		var fb frameBatch
		err := fb.parse(append([]byte(nil), b...))
		var want []*frame
		for rest := b; len(rest) > 0; {
			num, typ, n := protowire.ConsumeTag(rest)
			if n < 0 || num != 1 || typ != protowire.BytesType {
				want = nil
				break
			}
			v, m := protowire.ConsumeBytes(rest[n:])
			if m < 0 {
				want = nil
				break
			}
			fr, ferr := parseFrame(append([]byte(nil), v...))
			if ferr != nil {
				want = nil
				break
			}
			want = append(want, fr)
			rest = rest[n+m:]
		}
		if err != nil {
			return
		}
		if len(fb.frames) != len(want) {
			t.Fatalf("%d frames, each response alone makes %d", len(fb.frames), len(want))
		}
		for i, fr := range fb.frames {
			if w := want[i]; fr.t != w.t || string(fr.uuid) != string(w.uuid) || fr.mark != w.mark || string(fr.raw) != string(w.raw) {
				t.Fatalf("frame %d: %+v, alone %+v", i, fr, w)
			}
		}
	})
}
