package cli

import (
	"net/netip"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/internal/testtools"
	"github.com/loupe-project/loupe/observer"
)

type resolverFunc func(uint32) []*flowpb.Policy

func (f resolverFunc) ResolvePolicy(id uint32) []*flowpb.Policy { return f(id) }

// recordResponses runs a policy verdict, a policy drop and a trace, laid
// out as the datapath writes them (datapath's tests tie EncodeEvent to the
// compiled object), through the observer's real decoder.
func recordResponses(t *testing.T) []*observerpb.GetFlowsResponse {
	t.Helper()
	const allowRule, denyRule = 7, 8
	pols := resolverFunc(func(id uint32) []*flowpb.Policy {
		switch id {
		case allowRule:
			return []*flowpb.Policy{{Name: "allow-x", Namespace: "x", Kind: "NetworkPolicy"}}
		case denyRule:
			return []*flowpb.Policy{{Name: "deny-y", Namespace: "x", Kind: "NetworkPolicy"}}
		}
		return nil
	})
	dec := observer.NewDecoder("node-1", nil, pols, func(uint32) string { return "lxc0" })
	a, b := netip.MustParseAddr("10.244.1.10"), netip.MustParseAddr("10.244.1.11")
	records := []datapath.Event{
		{Type: contract.MessageTypePolicyVerdict, Verdict: contract.VerdictForwarded, Direction: contract.DirectionIngress,
			MatchType: contract.PolicyMatchL3L4, PolicyID: allowRule, Flags: datapath.FlagCTNew, TCPFlags: 0x02},
		{Type: contract.MessageTypeDrop, Verdict: contract.VerdictDropped, DropReason: contract.DropPolicyDenied,
			Direction: contract.DirectionIngress, PolicyID: denyRule, TCPFlags: 0x02},
		{Type: contract.MessageTypeTrace, ObsPoint: contract.TraceToLxc, Verdict: contract.VerdictForwarded,
			Direction: contract.DirectionIngress, Flags: datapath.FlagCTNew, TCPFlags: 0x02},
	}
	var out []*observerpb.GetFlowsResponse
	for i, ev := range records {
		ev.TimestampNS = uint64(i+1) * 1e6
		ev.Proto, ev.Src, ev.Dst, ev.SrcPort, ev.DstPort = 6, a, b, 40000, 80
		ev.Ifindex, ev.EndpointID, ev.SrcIdentity, ev.DstIdentity = 9, 42, 30001, 30002
		f, err := dec.DecodeFlow(datapath.MustEncodeEvent(&ev))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &observerpb.GetFlowsResponse{Time: f.GetTime(), NodeName: f.GetNodeName(),
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}})
	}
	return out
}

// TestRecordToPrintedType follows a record from the datapath's layout to
// the TYPE column both CLIs print. Its fakes are records, not flows: a
// number that differs between the datapath and Hubble (the policy verdict
// was 9 in one and 5 in the other) fails here.
func TestRecordToPrintedType(t *testing.T) {
	resp := recordResponses(t)
	if got := resp[0].GetFlow().GetEventType().GetType(); got != contract.MessageTypePolicyVerdict {
		t.Fatalf("policy verdict flow has event type %d", got)
	}
	addr := startFake(t, &fakeObserver{responses: resp})
	args := []string{"observe", "--server", addr, "-o", "compact", "--color", "never", "--print-policy-names"}
	want := []string{
		"policy-verdict:L3-L4 INGRESS ALLOWED BY allow-x (NetworkPolicy)",
		"Policy denied DROPPED",
		"to-endpoint FORWARDED",
	}
	check := func(who, out string) {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != len(want) {
			t.Fatalf("%s printed %d lines, want %d:\n%s", who, len(lines), len(want), out)
		}
		for i, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("%s line %d lacks %q:\n%s", who, i+1, w, lines[i])
			}
		}
	}
	out, errs, err := run(t, NewObserveCommand(), args[1:]...)
	if err != nil {
		t.Fatalf("loupe: %v\n%s", err, errs)
	}
	check("loupe", out)

	bin := testtools.Hubble(t, "hubble")
	hOut, hErr, err := runHubble(t, bin, args...)
	if err != nil {
		t.Fatalf("hubble: %v\n%s", err, hErr)
	}
	check("hubble", hOut)
	if hOut != out {
		t.Errorf("the CLIs differ\nhubble:\n%s\nloupe:\n%s", hOut, out)
	}
}
