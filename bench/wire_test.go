package bench

import (
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestFlowTime(t *testing.T) {
	ts := time.Unix(1700000000, 123456789)
	b, _ := proto.Marshal(&observerpb.GetFlowsResponse{NodeName: "n", Time: timestamppb.Now(),
		ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{Time: timestamppb.New(ts), Uuid: "u"}}})
	if got, isFlow, err := flowTime(b); err != nil || !isFlow || got != ts.UnixNano() {
		t.Fatalf("flowTime = %d %v %v, want %d", got, isFlow, err, ts.UnixNano())
	}
	b, _ = proto.Marshal(&observerpb.GetFlowsResponse{NodeName: "n", Time: timestamppb.Now()}) // a watermark
	if _, isFlow, err := flowTime(b); err != nil || isFlow {
		t.Fatalf("watermark read as a flow (%v)", err)
	}
	if _, _, err := flowTime([]byte{0x0a, 0x05}); err == nil {
		t.Fatal("truncated response accepted")
	}
}

// The bench client's reader agrees with protobuf on every response both accept.
func FuzzFlowTime(f *testing.F) {
	b, _ := proto.Marshal(&observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{
		Flow: &flowpb.Flow{Time: timestamppb.Now(), Uuid: "u"}}})
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, isFlow, err := flowTime(b)
		var m observerpb.GetFlowsResponse
		if err != nil || proto.Unmarshal(b, &m) != nil {
			return
		}
		if isFlow != (m.GetFlow() != nil) {
			t.Fatalf("isFlow %v, protobuf %v", isFlow, m.GetFlow() != nil)
		}
		if ft := m.GetFlow().GetTime(); isFlow && ft != nil && got != ft.GetSeconds()*1e9+int64(ft.GetNanos()) {
			t.Fatalf("time %d, protobuf %v", got, ft)
		}
	})
}
