package relay_test

import (
	"context"
	"net/netip"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/observer/aggregate"
	"github.com/loupe-project/loupe/observer/observertest"
	"github.com/loupe-project/loupe/relay"
	"github.com/loupe-project/loupe/relay/relaytest"
)

// realAgent serves a real observer fed n datapath events from src to dst
// on port 80+i%2.
func realAgent(t *testing.T, name string, n int, src, dst string) string {
	t.Helper()
	o, err := observer.New(observer.Config{NodeName: name, BufferSize: 1023, LinkName: func(uint32) string { return "lxc" }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		o.HandleEvent(datapath.MustEncodeEvent(&datapath.Event{
			TimestampNS: uint64(1000+i) * 1e9, Type: contract.MessageTypeTrace, ObsPoint: contract.TraceFromLxc,
			Verdict: contract.VerdictForwarded, Proto: 6, TCPFlags: 0x02, Flags: 2, EndpointID: 1,
			Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: uint16(30000 + i), DstPort: uint16(80 + i%2),
			Direction: contract.DirectionEgress, PacketLen: 60,
		}))
	}
	return observertest.Serve(t, o)
}

// The relay sums every agent's edges; the sums equal aggregating the
// relay's plain flows of the same range.
func TestAggregateAcrossAgents(t *testing.T) {
	a1 := realAgent(t, "node-1", 100, "10.0.1.1", "10.0.2.2")
	a2 := realAgent(t, "node-2", 60, "10.0.1.1", "10.0.2.2")
	r := startRelay(t, testConfig(), nil, relay.StaticPeers{a1, a2})
	waitConnected(t, r.srv, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &observerpb.GetFlowsRequest{Since: timestamppb.New(time.Unix(0, 0))}

	want := aggregate.NewSet()
	flows, _ := readAll(t, ctx, r.client, req)
	for _, f := range flows {
		want.Add(f)
	}
	got, _ := readAll(t, aggregate.Ask(ctx), r.client, req)
	if len(got) != want.Len() || len(got) != 2 {
		t.Fatalf("%d edges, want %d (2: ports 80 and 81)", len(got), want.Len())
	}
	var sum uint64
	for i, f := range got {
		e, ok := aggregate.Of(f)
		w := want.Edges()[i]
		if !ok || e.Key != w.Key || e.Flows != w.Flows || !e.First.Equal(w.First) || !e.Last.Equal(w.Last) {
			t.Fatalf("edge %d: %+v, want %+v", i, e, w)
		}
		sum += e.Flows
	}
	if sum != 160 {
		t.Fatalf("%d flows in the edges, want 160", sum)
	}
}

// A follow from `since` through the relay reads each agent's history in
// order and without the follow queue's losses, then goes on live.
func TestFollowSinceFromHistory(t *testing.T) {
	o, addr := relay.StartHistoryAgent(t, 63, 100000*time.Hour)
	fill := func(first, n int) {
		for i := first; i < first+n; i++ {
			o.HandleEvent(datapath.MustEncodeEvent(&datapath.Event{
				TimestampNS: uint64(1000+i) * 1e6, Type: contract.MessageTypeTrace, ObsPoint: contract.TraceFromLxc,
				Verdict: contract.VerdictForwarded, Proto: 6, TCPFlags: 0x02, Flags: 2, EndpointID: 1,
				Src: netip.MustParseAddr("10.0.1.1"), Dst: netip.MustParseAddr("10.0.2.2"), SrcPort: uint16(20000 + i), DstPort: 80,
				Direction: contract.DirectionEgress, PacketLen: 60,
			}))
			if i%40 == 39 {
				for !o.HistoryCaughtUp() {
					time.Sleep(2 * time.Millisecond)
				}
			}
		}
	}
	fill(0, 6000) // ~100 rings' worth, and more than the relay's queue
	r := startRelay(t, testConfig(), nil, relay.StaticPeers{addr})
	waitConnected(t, r.srv, 1)
	f := follow(t, r.client, &observerpb.GetFlowsRequest{Follow: true, Since: timestamppb.New(time.Unix(0, 0))})
	next := 0
	for next < 6010 {
		if next == 6000 {
			fill(6000, 10)
		}
		resp := f.next(t)
		if le := resp.GetLostEvents(); le != nil {
			t.Fatalf("after %d flows: lost %v", next, le)
		}
		if fl := resp.GetFlow(); fl != nil {
			if got := int(fl.GetL4().GetTCP().GetSourcePort()) - 20000; got != next {
				t.Fatalf("flow %d is number %d", next, got)
			}
			next++
		}
	}
}

// The relay asks loupe's agents for FlowBatches and Cilium's (the fake
// agent answers it Unimplemented) for GetFlows: every flow of both
// arrives once, in time order, and the loupe agent's 1,000 flows take a
// few messages, not one each. The fallback is remembered per peer.
func TestRelayAsksLoupeAgentsForBatches(t *testing.T) {
	real := realAgent(t, "node-9", 1000, "10.0.1.1", "10.0.2.2")
	fakes := startAgents(t, 1, relaytest.Options{})
	fill(fakes, 200)
	r := startRelay(t, testConfig(), nil, relay.StaticPeers{real, fakes[0].Addr()})
	waitConnected(t, r.srv, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &observerpb.GetFlowsRequest{Since: timestamppb.New(time.Unix(0, 0))}
	for round := range 2 {
		got, _ := readAll(t, ctx, r.client, req)
		if len(got) != 1200 || !sortedByTime(got) {
			t.Fatalf("round %d: %d flows (want 1200), in order: %v", round, len(got), sortedByTime(got))
		}
		byNode := map[string]int{}
		for _, f := range got {
			byNode[f.GetNodeName()]++
		}
		if byNode["node-9"] != 1000 || byNode["node-1"] != 200 {
			t.Fatalf("round %d: flows by node %v", round, byNode)
		}
	}
	st := r.srv.Stats()
	if n := st.FlowBatchMessages.Load(); n == 0 || n > 2*1000/20 {
		t.Errorf("2 × 1000 flows in %d FlowBatches messages", n)
	}
	if n := st.GetFlowsFallbacks.Load(); n != 1 {
		t.Errorf("%d fallbacks to GetFlows, want 1 (the fake agent, once)", n)
	}
}
