package cli

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/loupe-project/loupe/contract"
)

// kernelDropFlow is a kernel drop as the observer builds it (observer's
// TestKernelDropFlows builds it from a record; test/e2e's
// TestPrivilegedKernelDropNoSocket from a real drop).
func kernelDropFlow(t *testing.T, reason, fn string, sport uint32) *flowpb.Flow {
	t.Helper()
	ext, err := anypb.New(&structpb.Struct{Fields: map[string]*structpb.Value{
		contract.ExtKernelDrop: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			contract.ExtKernelReason:       structpb.NewStringValue(reason),
			contract.ExtKernelReasonCode:   structpb.NewNumberValue(2),
			contract.ExtKernelFunction:     structpb.NewStringValue(fn),
			contract.ExtKernelAttributedBy: structpb.NewStringValue("netns"),
		}}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &flowpb.Flow{
		Time: ts(1700000100, 0), Verdict: flowpb.Verdict_DROPPED, NodeName: "node-1",
		EventType:   &flowpb.CiliumEventType{Type: contract.MessageTypeDrop},
		IP:          &flowpb.IP{Source: "10.0.2.20", Destination: "10.0.1.10", IpVersion: flowpb.IPVersion_IPv4},
		L4:          &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: sport, DestinationPort: 9}}},
		Source:      ep(0, 0, "y", "db-0"),
		Destination: ep(7, 1234, "x", "web"),
		Summary:     "UDP; kernel drop " + reason + " in " + fn,
		Extensions:  ext,
	}
}

func TestObserveKernelDrops(t *testing.T) {
	resp := fixtureResponses()
	for _, f := range []*flowpb.Flow{
		kernelDropFlow(t, "SKB_DROP_REASON_NO_SOCKET", "__udp4_lib_rcv", 1001),
		kernelDropFlow(t, "SKB_DROP_REASON_NETFILTER_DROP", "nf_hook_slow", 1002),
	} {
		resp = append(resp, &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}})
	}
	fake := &fakeObserver{responses: resp}
	addr := startFake(t, fake)

	out, _, err := run(t, NewObserveCommand(), "--server", addr, "--kernel-drops", "--color", "never")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "kernel:NO_SOCKET DROPPED (UDP; kernel drop SKB_DROP_REASON_NO_SOCKET in __udp4_lib_rcv)") ||
		!strings.Contains(lines[1], "kernel:NETFILTER_DROP") {
		t.Errorf("--kernel-drops printed:\n%s", out)
	}
	// The server is asked for drops only.
	req := fake.takeRequest(t)
	if wl := req.GetWhitelist(); len(wl) != 1 || len(wl[0].GetEventType()) != 1 || wl[0].GetEventType()[0].GetType() != contract.MessageTypeDrop {
		t.Errorf("whitelist %v, want event type drop", wl)
	}

	for _, arg := range []string{"NO_SOCKET", "skb_drop_reason_no_socket", "SKB_DROP_REASON_NO_SOCKET"} {
		out, _, err = run(t, NewObserveCommand(), "--server", addr, "--kernel-drop-reason", arg, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, `"reason":"SKB_DROP_REASON_NO_SOCKET"`) || !strings.Contains(out, `"function":"__udp4_lib_rcv"`) {
			t.Errorf("--kernel-drop-reason %s printed %d lines:\n%s", arg, n, out)
		}
		fake.takeRequest(t)
	}
	out, _, err = run(t, NewObserveCommand(), "--server", addr, "--kernel-drop-reason", "NO_SOCKET", "--kernel-drop-reason", "NETFILTER_DROP", "--pod", "x/web")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "\n"); n != 2 {
		t.Errorf("two reasons printed %d lines:\n%s", n, out)
	}
	// Each pod filter also asks for drops only.
	for _, f := range fake.takeRequest(t).GetWhitelist() {
		if len(f.GetEventType()) != 1 || len(f.GetSourcePod())+len(f.GetDestinationPod()) == 0 {
			t.Errorf("whitelist filter %v", f)
		}
	}
	// Without the flags, kernel drops print with the rest.
	out, _, err = run(t, NewObserveCommand(), "--server", addr, "--color", "never")
	if err != nil || !strings.Contains(out, "kernel:NO_SOCKET DROPPED") || strings.Count(out, "\n") != len(resp) {
		t.Errorf("plain observe (%v):\n%s", err, out)
	}
}
