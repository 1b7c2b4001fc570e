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

// tcpEventFlow is a TCP health event as the observer builds it (observer's
// TestTCPEventFlows builds it from a record; test/e2e's
// TestPrivilegedLabTCPHealth from real retransmissions and resets).
func tcpEventFlow(t *testing.T, event, reason string, sport uint32) *flowpb.Flow {
	t.Helper()
	fields := map[string]*structpb.Value{
		contract.ExtTCPEvent:        structpb.NewStringValue(event),
		contract.ExtTCPAttributedBy: structpb.NewStringValue("netns"),
	}
	summary := "TCP reset received"
	obs := flowpb.TraceObservationPoint_FROM_STACK
	switch event {
	case contract.TCPEventRetransmit:
		fields[contract.ExtTCPSegments] = structpb.NewNumberValue(1)
		fields[contract.ExtTCPConnRetrans] = structpb.NewNumberValue(5)
		summary = "TCP retransmission of 1 ACK segment(s), 5 on the connection"
	case contract.TCPEventResetSent:
		fields[contract.ExtTCPReason] = structpb.NewStringValue(reason)
		summary = "TCP reset sent, " + reason
	default:
		obs = flowpb.TraceObservationPoint_TO_STACK
	}
	ext, err := anypb.New(&structpb.Struct{Fields: map[string]*structpb.Value{
		contract.ExtTCP: structpb.NewStructValue(&structpb.Struct{Fields: fields}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	sub := int32(contract.TraceFromStack)
	if obs == flowpb.TraceObservationPoint_TO_STACK {
		sub = contract.TraceToStack
	}
	return &flowpb.Flow{
		Time: ts(1700000200, 0), Verdict: flowpb.Verdict_FORWARDED, NodeName: "node-1",
		EventType:             &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: sub},
		TraceObservationPoint: obs,
		IP:                    &flowpb.IP{Source: "10.0.1.10", Destination: "10.0.2.20", IpVersion: flowpb.IPVersion_IPv4},
		L4:                    &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: 5432}}},
		Source:                ep(7, 1234, "x", "web"),
		Destination:           ep(0, 0, "y", "db-0"),
		Summary:               summary,
		Extensions:            ext,
	}
}

func TestObserveTCPEvents(t *testing.T) {
	resp := fixtureResponses()
	for _, f := range []*flowpb.Flow{
		tcpEventFlow(t, contract.TCPEventRetransmit, "", 2001),
		tcpEventFlow(t, contract.TCPEventResetSent, "SK_RST_REASON_NO_SOCKET", 2002),
		tcpEventFlow(t, contract.TCPEventResetReceived, "", 2003),
		kernelDropFlow(t, "SKB_DROP_REASON_NO_SOCKET", "__udp4_lib_rcv", 1001),
	} {
		resp = append(resp, &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}})
	}
	fake := &fakeObserver{responses: resp}
	addr := startFake(t, fake)

	out, _, err := run(t, NewObserveCommand(), "--server", addr, "--tcp-events", "--color", "never")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "tcp:retransmit FORWARDED (TCP retransmission of 1 ACK segment(s), 5 on the connection)") ||
		!strings.Contains(lines[1], "tcp:reset_sent:NO_SOCKET FORWARDED") || !strings.Contains(lines[2], "tcp:reset_received FORWARDED") {
		t.Errorf("--tcp-events printed:\n%s", out)
	}
	// The server is asked for trace events only.
	req := fake.takeRequest(t)
	if wl := req.GetWhitelist(); len(wl) != 1 || len(wl[0].GetEventType()) != 1 || wl[0].GetEventType()[0].GetType() != contract.MessageTypeTrace {
		t.Errorf("whitelist %v, want event type trace", wl)
	}

	for _, arg := range []string{"reset_sent", "Reset-Sent"} {
		out, _, err = run(t, NewObserveCommand(), "--server", addr, "--tcp-event", arg, "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(out, "\n"); n != 1 || !strings.Contains(out, `"reason":"SK_RST_REASON_NO_SOCKET"`) {
			t.Errorf("--tcp-event %s printed %d lines:\n%s", arg, n, out)
		}
		fake.takeRequest(t)
	}
	// Both kinds of flags: either kind of event, both event types asked for.
	out, _, err = run(t, NewObserveCommand(), "--server", addr, "--tcp-events", "--kernel-drops", "--color", "never")
	if err != nil || strings.Count(out, "\n") != 4 {
		t.Errorf("--tcp-events --kernel-drops (%v):\n%s", err, out)
	}
	if wl := fake.takeRequest(t).GetWhitelist(); len(wl) != 1 || len(wl[0].GetEventType()) != 2 {
		t.Errorf("whitelist %v, want trace and drop", wl)
	}
	if _, _, err := run(t, NewObserveCommand(), "--server", addr, "--tcp-event", "timeout"); err == nil || !strings.Contains(err.Error(), "--tcp-event") {
		t.Errorf("unknown kind: %v", err)
	}
}
