package cli

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/testtools"
)

// connectionFlow is a FIN flow with a connection's counters as the
// observer builds it (observer's TestConnectionExtension builds it from a
// record, lab's TestPrivilegedLabConnectionBytes from a real transfer).
func connectionFlow(t *testing.T) *flowpb.Flow {
	t.Helper()
	ext, err := anypb.New(&structpb.Struct{Fields: map[string]*structpb.Value{
		contract.ExtConnection: structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			contract.ExtConnPacketsSent:     structpb.NewNumberValue(1600),
			contract.ExtConnBytesSent:       structpb.NewNumberValue(104_960_000),
			contract.ExtConnPacketsReceived: structpb.NewNumberValue(900),
			contract.ExtConnBytesReceived:   structpb.NewNumberValue(59_400),
			contract.ExtConnHandshakeNS:     structpb.NewNumberValue(84_321),
			contract.ExtConnObservedAt:      structpb.NewStringValue(contract.ObservedAtClient),
		}}),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return &flowpb.Flow{
		Time: ts(1700000100, 0), Verdict: flowpb.Verdict_FORWARDED, NodeName: "node-1",
		EventType:        &flowpb.CiliumEventType{Type: contract.MessageTypeTrace, SubType: 5},
		IP:               &flowpb.IP{Source: "10.0.1.11", Destination: "10.0.2.20", IpVersion: flowpb.IPVersion_IPv4},
		L4:               &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: 5432, Flags: &flowpb.TCPFlags{FIN: true, ACK: true}}}},
		Source:           ep(7, 1234, "x", "web"),
		Destination:      ep(0, 2000, "y", "db-0"),
		TrafficDirection: flowpb.TrafficDirection_EGRESS,
		Summary:          "TCP Flags: ACK, FIN",
		Extensions:       ext,
	}
}

func TestObserveConnectionCounters(t *testing.T) {
	f := connectionFlow(t)
	addr := startFake(t, &fakeObserver{responses: []*observerpb.GetFlowsResponse{
		{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}},
	}})
	out, _, err := run(t, NewObserveCommand(), "--server", addr, "--color", "never")
	if err != nil {
		t.Fatal(err)
	}
	if want := "(TCP Flags: ACK, FIN; sent 1600 pkts 105 MB, received 900 pkts 59.4 kB, handshake 84µs)"; !strings.Contains(out, want) {
		t.Errorf("compact output lacks %q:\n%s", want, out)
	}
	out, _, err = run(t, NewObserveCommand(), "--server", addr, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, `"connection":{`) || !strings.Contains(out, `"bytes_sent":104960000`) || !strings.Contains(out, `"handshake_latency_ns":84321`) {
		t.Errorf("json output:\n%s", out)
	}
}

// TestCompatHubbleJSONConnection: the stock hubble CLI marshals the
// extension (an Any of google.protobuf.Struct) and prints what loupe does.
func TestCompatHubbleJSONConnection(t *testing.T) {
	bin := testtools.Hubble(t, "hubble")
	addr := startFake(t, &fakeObserver{responses: []*observerpb.GetFlowsResponse{
		{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: connectionFlow(t)}},
	}})
	args := []string{"observe", "--server", addr, "-o", "json"}
	hOut, hErr, err := runHubble(t, bin, args...)
	if err != nil {
		t.Fatalf("hubble: %v\n%s", err, hErr)
	}
	lOut, _, err := run(t, NewObserveCommand(), args[1:]...)
	if err != nil {
		t.Fatal(err)
	}
	if hOut != lOut || !strings.Contains(hOut, `"bytes_sent":104960000`) {
		t.Errorf("hubble:\n%s\nloupe:\n%s", hOut, lOut)
	}
}

func TestHumanBytes(t *testing.T) {
	for v, want := range map[uint64]string{0: "0 B", 999: "999 B", 1000: "1 kB", 59_400: "59.4 kB", 104_960_000: "105 MB", 3e12: "3 TB"} {
		if got := humanBytes(v); got != want {
			t.Errorf("%d: %q, want %q", v, got, want)
		}
	}
}
