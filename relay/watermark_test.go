package relay_test

import (
	"slices"
	"sort"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/loupe-project/loupe/relay/relaytest"
)

// followAll starts a follow stream and waits until every agent has it.
func followAll(t *testing.T, r *testRelay, agents []*relaytest.Agent) *follower {
	t.Helper()
	f := follow(t, r.client, &observerpb.GetFlowsRequest{Follow: true})
	eventually(t, "agents see the follow request", func() bool {
		for _, a := range agents {
			if len(a.Requests()) == 0 {
				return false
			}
		}
		return true
	})
	return f
}

// flowsNoMarks reads n flows and fails on a watermark: the relay consumes them.
func (f *follower) flowsNoMarks(t *testing.T, n int) []*flowpb.Flow {
	t.Helper()
	var flows []*flowpb.Flow
	for len(flows) < n {
		r := f.next(t)
		if r.GetResponseTypes() == nil {
			t.Fatalf("the relay passed a watermark on: %v", r)
		}
		if fl := r.GetFlow(); fl != nil {
			flows = append(flows, fl)
		}
	}
	return flows
}

// interleave adds rounds of one flow per agent, stamped in agent order
// within a round, and returns them in time order.
func interleave(agents []*relaytest.Agent, busy []int, rounds int) []*flowpb.Flow {
	var want []*flowpb.Flow
	for i := range rounds {
		now := time.Now()
		for k, ai := range busy {
			fl := relaytest.Flow(agents[ai].Name(), now.Add(time.Duration(k)*time.Microsecond), 1000*ai+i)
			agents[ai].Add(fl)
			want = append(want, fl)
		}
		time.Sleep(time.Millisecond)
	}
	sort.SliceStable(want, func(i, j int) bool { return want[i].GetTime().AsTime().Before(want[j].GetTime().AsTime()) })
	return want
}

// With a drain timeout of an hour, only the peers' watermarks can release
// live flows: they reach the follower although one node is idle, in time
// order across the busy nodes, and no watermark is passed on.
func TestFollowWatermarksReleaseFlows(t *testing.T) {
	agents := startAgents(t, 3, relaytest.Options{Watermarks: 20 * time.Millisecond})
	cfg := testConfig()
	cfg.SortBufferDrainTimeout = time.Hour
	r := startRelay(t, cfg, nil, addrs(agents))
	waitConnected(t, r.srv, 3)
	f := followAll(t, r, agents)
	for round := range 3 {
		want := interleave(agents, []int{0, 1}, 10) // node-3 stays idle
		got := f.flowsNoMarks(t, len(want))
		if !slices.Equal(uuids(got), uuids(want)) {
			t.Fatalf("round %d: got %v\nwant %v (in time order)", round, uuids(got), uuids(want))
		}
	}
}

// A peer without watermarks (a stock Cilium agent), or one whose
// watermarks stop, holds flows back until the drain timeout, as before:
// they still arrive, in order.
func TestFollowPeerWithoutWatermarks(t *testing.T) {
	marked := startAgents(t, 2, relaytest.Options{Watermarks: 20 * time.Millisecond})
	stock, err := relaytest.Start(relaytest.Options{Name: "stock-node"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stock.Stop)
	agents := append(marked, stock)
	cfg := testConfig()
	cfg.SortBufferDrainTimeout = 200 * time.Millisecond
	r := startRelay(t, cfg, nil, addrs(agents))
	waitConnected(t, r.srv, 3)
	f := followAll(t, r, agents)

	want := interleave(agents, []int{0, 1, 2}, 10)
	if got := f.flowsNoMarks(t, len(want)); !slices.Equal(uuids(got), uuids(want)) {
		t.Fatalf("with a stock peer: got %v\nwant %v", uuids(got), uuids(want))
	}
	marked[1].PauseWatermarks(true)
	want = interleave(agents, []int{0}, 10)
	if got := f.flowsNoMarks(t, len(want)); !slices.Equal(uuids(got), uuids(want)) {
		t.Fatalf("with a peer whose watermarks stopped: got %v\nwant %v", uuids(got), uuids(want))
	}
}
