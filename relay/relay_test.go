package relay_test

import (
	"context"
	"math/rand/v2"
	"net"
	"runtime"
	"slices"
	"sort"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/relay"
	"github.com/loupe-project/loupe/relay/relaytest"
)

var t0 = time.Date(2026, 7, 1, 12, 0, 0, 0, time.UTC)

// fill gives agent k flows at t0 + (k + i*n) ms, so the nodes interleave.
func fill(agents []*relaytest.Agent, perAgent int) []*flowpb.Flow {
	var all []*flowpb.Flow
	for k, a := range agents {
		var fs []*flowpb.Flow
		for i := range perAgent {
			fs = append(fs, relaytest.Flow(a.Name(), t0.Add(time.Duration(k+i*len(agents))*time.Millisecond), i))
		}
		a.Add(fs...)
		all = append(all, fs...)
	}
	return all
}

func TestMergeOrderAcrossThreePeers(t *testing.T) {
	for _, window := range []int{1000, 7} {
		agents := startAgents(t, 3, relaytest.Options{})
		all := fill(agents, 200)
		cfg := testConfig()
		cfg.SortBufferLen = window // exact even when the window is far smaller than the data
		r := startRelay(t, cfg, nil, addrs(agents))
		waitConnected(t, r.srv, 3)

		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		got, statuses := readAll(t, ctx, r.client, &observerpb.GetFlowsRequest{Since: timestamppb.New(t0)})
		if len(got) != len(all) {
			t.Fatalf("window %d: got %d flows, want %d", window, len(got), len(all))
		}
		if !sortedByTime(got) {
			t.Fatalf("window %d: flows not in time order", window)
		}
		if len(statuses) == 0 || statuses[0].GetStateChange() != relaypb.NodeState_NODE_CONNECTED ||
			!slices.Equal(statuses[0].GetNodeNames(), []string{"node-1", "node-2", "node-3"}) {
			t.Fatalf("window %d: first status %v, want NODE_CONNECTED for all three nodes", window, statuses)
		}
	}
}

func TestLastAndFirstAreClusterWide(t *testing.T) {
	agents := startAgents(t, 3, relaytest.Options{})
	rng := rand.New(rand.NewPCG(1, 2))
	var all []*flowpb.Flow
	for _, a := range agents {
		var fs []*flowpb.Flow
		for i := range 60 {
			fs = append(fs, relaytest.Flow(a.Name(), t0.Add(time.Duration(rng.IntN(1_000_000))*time.Microsecond), i))
		}
		// Each agent's ring is in time order, as a real agent's is.
		sort.Slice(fs, func(i, j int) bool { return fs[i].GetTime().AsTime().Before(fs[j].GetTime().AsTime()) })
		a.Add(fs...)
		all = append(all, fs...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].GetTime().AsTime().Before(all[j].GetTime().AsTime()) })

	r := startRelay(t, testConfig(), nil, addrs(agents))
	waitConnected(t, r.srv, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	last, _ := readAll(t, ctx, r.client, &observerpb.GetFlowsRequest{Number: 20})
	if want := uuids(all[len(all)-20:]); !slices.Equal(uuids(last), want) {
		t.Fatalf("--last 20:\n got %v\nwant %v", uuids(last), want)
	}
	first, _ := readAll(t, ctx, r.client, &observerpb.GetFlowsRequest{Number: 20, First: true})
	if want := uuids(all[:20]); !slices.Equal(uuids(first), want) {
		t.Fatalf("--first 20:\n got %v\nwant %v", uuids(first), want)
	}
	// More than the rings hold: everything, in order (the streaming path).
	everything, _ := readAll(t, ctx, r.client, &observerpb.GetFlowsRequest{Number: ^uint64(0)})
	if !slices.Equal(uuids(everything), uuids(all)) {
		t.Fatalf("--all: got %d flows (sorted %v), want %d in order", len(everything), sortedByTime(everything), len(all))
	}
	for _, a := range agents {
		if reqs := a.Requests(); reqs[0].GetNumber() != 20 {
			t.Errorf("%s was asked for %d flows, want 20", a.Name(), reqs[0].GetNumber())
		}
	}
}

func TestFollowDeliversFromAllPeers(t *testing.T) {
	agents := startAgents(t, 3, relaytest.Options{})
	fill(agents, 5) // history that plain follow must not replay
	r := startRelay(t, testConfig(), nil, addrs(agents))
	waitConnected(t, r.srv, 3)

	f := follow(t, r.client, &observerpb.GetFlowsRequest{Follow: true})
	first := f.next(t).GetNodeStatus()
	if first.GetStateChange() != relaypb.NodeState_NODE_CONNECTED || len(first.GetNodeNames()) != 3 {
		t.Fatalf("first response %v, want NODE_CONNECTED for 3 nodes", first)
	}
	// The peers' streams are open once each agent has seen the request.
	eventually(t, "agents see the follow request", func() bool {
		for _, a := range agents {
			if len(a.Requests()) == 0 {
				return false
			}
		}
		return true
	})
	now := time.Now()
	var want []*flowpb.Flow
	for k, a := range agents {
		for i := range 10 {
			fl := relaytest.Flow(a.Name(), now.Add(time.Duration(k+3*i)*time.Microsecond), 100+i)
			a.Add(fl)
			want = append(want, fl)
		}
	}
	got := f.flows(t, len(want))
	sort.Slice(want, func(i, j int) bool { return want[i].GetTime().AsTime().Before(want[j].GetTime().AsTime()) })
	if !slices.Equal(uuids(got), uuids(want)) {
		t.Fatalf("follow: got %v\nwant %v (in time order, within the sort window)", uuids(got), uuids(want))
	}
}

func TestPeerLeavesAndRejoinsMidFollow(t *testing.T) {
	agents := startAgents(t, 3, relaytest.Options{})
	r := startRelay(t, testConfig(), nil, addrs(agents))
	waitConnected(t, r.srv, 3)
	f := follow(t, r.client, &observerpb.GetFlowsRequest{Follow: true})
	f.untilStatus(t, "node-3", relaypb.NodeState_NODE_CONNECTED)
	eventually(t, "agents see the follow request", func() bool {
		return len(agents[0].Requests()) > 0 && len(agents[1].Requests()) > 0 && len(agents[2].Requests()) > 0
	})

	seq := 0
	add := func(a *relaytest.Agent) *flowpb.Flow {
		seq++
		fl := relaytest.Flow(a.Name(), time.Now(), seq)
		a.Add(fl)
		return fl
	}
	seen := map[string]int{}
	count := func(fs []*flowpb.Flow) {
		for _, fl := range fs {
			seen[fl.GetUuid()]++
		}
	}
	before := []*flowpb.Flow{add(agents[0]), add(agents[1]), add(agents[2])}
	count(f.flows(t, 3))

	agents[1].Stop()
	count(f.untilStatus(t, "node-2", relaypb.NodeState_NODE_UNAVAILABLE, relaypb.NodeState_NODE_ERROR))

	// The stream goes on without node-2.
	during := []*flowpb.Flow{add(agents[0]), add(agents[2])}
	count(f.flows(t, 2))
	// Flows node-2 records while the relay cannot reach it.
	missed := []*flowpb.Flow{add(agents[1]), add(agents[1])}

	if err := agents[1].Restart(); err != nil {
		t.Fatal(err)
	}
	count(f.untilStatus(t, "node-2", relaypb.NodeState_NODE_CONNECTED))
	after := add(agents[1])
	for seen[after.GetUuid()] == 0 {
		count(f.flows(t, 1))
	}
	for _, fl := range slices.Concat(before, during, missed, []*flowpb.Flow{after}) {
		if n := seen[fl.GetUuid()]; n != 1 {
			t.Errorf("flow %s from %s delivered %d times, want once", fl.GetUuid(), fl.GetNodeName(), n)
		}
	}
	reqs := agents[1].Requests()
	if got := reqs[len(reqs)-1].GetSince(); got == nil || !got.AsTime().Equal(before[1].GetTime().AsTime()) {
		t.Errorf("rejoin asked for since %v, want the last flow seen from node-2 (%v)", got.AsTime(), before[1].GetTime().AsTime())
	}
}

// blackhole accepts TCP connections and never answers.
func blackhole(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	return lis.Addr().String()
}

func TestNonFollowReturnsWithinFiveSecondsWithPeersDown(t *testing.T) {
	agents := startAgents(t, 4, relaytest.Options{})
	fill(agents, 10)
	peers := append(addrs(agents), blackhole(t))
	r := startRelay(t, testConfig(), nil, peers)
	waitPeers(t, r.srv, "the four agents connected and named", func(p []relay.PeerInfo) bool {
		named := 0
		for _, pi := range p {
			if pi.Version != "" {
				named++
			}
		}
		return connectedCount(p) == 4 && named == 4
	})

	agents[2].Stop()         // node-3 is down
	agents[3].SetStall(true) // node-4 accepts the request and never answers

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, statuses := readAll(t, ctx, r.client, &observerpb.GetFlowsRequest{Number: 100})
	if ctx.Err() != nil {
		t.Fatal("GetFlows did not return within 5 s")
	}
	nodes := map[string]bool{}
	for _, f := range got {
		nodes[f.GetNodeName()] = true
	}
	if !nodes["node-1"] || !nodes["node-2"] || nodes["node-3"] || len(got) != 20 {
		t.Errorf("got %d flows from %v, want 20 from node-1 and node-2", len(got), nodes)
	}
	reported := map[string]relaypb.NodeState{}
	for _, s := range statuses {
		for _, n := range s.GetNodeNames() {
			reported[n] = s.GetStateChange()
		}
	}
	for _, n := range []string{"node-3", "node-4", peers[4]} {
		if st := reported[n]; st != relaypb.NodeState_NODE_UNAVAILABLE && st != relaypb.NodeState_NODE_ERROR {
			t.Errorf("%s reported as %v, want unavailable or error (statuses %v)", n, st, statuses)
		}
	}
}

func TestSlowClientGetsCountedLostEventsAndBoundedMemory(t *testing.T) {
	const perAgent = 60000
	agents := startAgents(t, 2, relaytest.Options{Capacity: 4095})
	fill(agents, 4095) // rings full before the baseline
	cfg := testConfig()
	cfg.ClientQueueLen = 64
	cfg.SortBufferDrainTimeout = 10 * time.Millisecond
	r := startRelay(t, cfg, nil, addrs(agents))
	waitConnected(t, r.srv, 2)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := r.client.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "agents see the follow request", func() bool {
		return len(agents[0].Requests()) > 0 && len(agents[1].Requests()) > 0
	})
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseline := ms.HeapAlloc

	// The client reads nothing while 120k flows pass through the relay.
	start := time.Now()
	for i := 0; i < perAgent; i += 1000 {
		for _, a := range agents {
			var fs []*flowpb.Flow
			for j := range 1000 {
				fs = append(fs, relaytest.Flow(a.Name(), start.Add(time.Duration(i+j)*time.Microsecond), i+j))
			}
			a.Add(fs...)
		}
	}
	// Every flow an agent sent (or reported lost) has gone through the merge.
	var agentLost uint64
	eventually(t, "the relay to merge every flow", func() bool {
		st := r.srv.Stats()
		return st.FlowsMerged.Load()+st.PeerEventsLost.Load() >= 2*perAgent
	})
	runtime.GC()
	runtime.ReadMemStats(&ms)
	growth := int64(ms.HeapAlloc) - int64(baseline)
	// 120k flows held in memory would be ~100 MB; the queue and window hold ~1000.
	if growth > 32<<20 {
		t.Errorf("heap grew by %d MB while the client was stalled", growth>>20)
	}

	var received, relayLost uint64
	for received+relayLost+agentLost < 2*perAgent {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("recv after %d flows, %d relay lost, %d agent lost: %v", received, relayLost, agentLost, err)
		}
		switch {
		case resp.GetFlow() != nil && resp.GetFlow().GetTime().AsTime().After(start.Add(-time.Nanosecond)):
			received++
		case resp.GetLostEvents() != nil:
			le := resp.GetLostEvents()
			if le.GetSource() == flowpb.LostEventSource_OBSERVER_EVENTS_QUEUE {
				relayLost += le.GetNumEventsLost()
			} else {
				agentLost += le.GetNumEventsLost()
			}
		}
	}
	if relayLost == 0 || relayLost != r.srv.Stats().FlowsDropped.Load() {
		t.Errorf("relay lost events %d, relay dropped %d: want equal and > 0", relayLost, r.srv.Stats().FlowsDropped.Load())
	}
	if received+relayLost+agentLost != 2*perAgent {
		t.Errorf("received %d + lost %d + %d != %d", received, relayLost, agentLost, 2*perAgent)
	}
	t.Logf("received %d, relay lost %d, agent lost %d, heap growth %d KB", received, relayLost, agentLost, growth>>10)
}

func TestFiltersAreForwardedUnchanged(t *testing.T) {
	agents := startAgents(t, 2, relaytest.Options{})
	fill(agents, 30)
	r := startRelay(t, testConfig(), nil, addrs(agents))
	waitConnected(t, r.srv, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	req := &observerpb.GetFlowsRequest{
		Number:    1000,
		Whitelist: []*flowpb.FlowFilter{{SourcePod: []string{"demo/client-1"}}, {NodeName: []string{"node-2"}, Verdict: []flowpb.Verdict{flowpb.Verdict_FORWARDED}}},
		Blacklist: []*flowpb.FlowFilter{{SourceIp: []string{"10.244.0.0/16"}, NodeName: []string{"node-2"}}},
		Since:     timestamppb.New(t0),
		Until:     timestamppb.New(t0.Add(time.Hour)),
		FieldMask: &fieldmaskpb.FieldMask{Paths: []string{"time", "source.pod_name", "node_name"}},
	}
	got, _ := readAll(t, ctx, r.client, req)
	for _, a := range agents {
		if fwd := a.Requests()[0]; !proto.Equal(fwd, req) {
			t.Errorf("%s received %v, want %v", a.Name(), fwd, req)
		}
	}
	for _, f := range got {
		if f.GetNodeName() != "node-1" || f.GetSource().GetPodName() != "client-1" {
			t.Errorf("unexpected flow %s/%s from %s", f.GetSource().GetNamespace(), f.GetSource().GetPodName(), f.GetNodeName())
		}
	}
	if len(got) == 0 {
		t.Error("no flows matched")
	}

	bad := &observerpb.GetFlowsRequest{Whitelist: []*flowpb.FlowFilter{{SourceIp: []string{"not-an-ip"}}}}
	for _, followMode := range []bool{false, true} {
		bad.Follow = followMode
		stream, err := r.client.GetFlows(ctx, bad)
		if err == nil {
			for err == nil {
				_, err = stream.Recv()
			}
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("follow=%v: malformed filter: got %v, want InvalidArgument", followMode, err)
		}
	}
}

func TestStatusNodesNamespacesAndHealth(t *testing.T) {
	agents := startAgents(t, 3, relaytest.Options{Capacity: 100, Version: "v-test"})
	fill(agents, 40)
	cfg := testConfig()
	cfg.Version = "relay-v1"
	r := startRelay(t, cfg, nil, addrs(agents))
	waitConnected(t, r.srv, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	agents[2].Stop()
	waitPeers(t, r.srv, "node-3 down", func(p []relay.PeerInfo) bool { return connectedCount(p) == 2 })

	st, err := r.client.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetNumFlows() != 80 || st.GetMaxFlows() != 200 || st.GetSeenFlows() != 80 || st.GetFlowsRate() != 3 ||
		st.GetNumConnectedNodes().GetValue() != 2 || st.GetNumUnavailableNodes().GetValue() != 1 ||
		!slices.Equal(st.GetUnavailableNodes(), []string{agents[2].Addr()}) && !slices.Equal(st.GetUnavailableNodes(), []string{"node-3"}) ||
		st.GetVersion() != "relay-v1" || st.GetUptimeNs() == 0 {
		t.Errorf("server status %v", st)
	}

	nodes, err := r.client.GetNodes(ctx, &observerpb.GetNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]relaypb.NodeState{}
	for _, n := range nodes.GetNodes() {
		states[n.GetName()] = n.GetState()
		if n.GetState() == relaypb.NodeState_NODE_CONNECTED && (n.GetVersion() != "v-test" || n.GetMaxFlows() != 100 || n.GetAddress() == "") {
			t.Errorf("node %v", n)
		}
	}
	if states["node-1"] != relaypb.NodeState_NODE_CONNECTED || states["node-2"] != relaypb.NodeState_NODE_CONNECTED ||
		states["node-3"] != relaypb.NodeState_NODE_UNAVAILABLE {
		t.Errorf("node states %v", states)
	}

	ns, err := r.client.GetNamespaces(ctx, &observerpb.GetNamespacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ns.GetNamespaces()) != 1 || ns.GetNamespaces()[0].GetNamespace() != "demo" {
		t.Errorf("namespaces %v, want demo once", ns.GetNamespaces())
	}

	h, err := healthpb.NewHealthClient(r.conn).Check(ctx, &healthpb.HealthCheckRequest{Service: relay.ObserverServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health %v %v", h, err)
	}
}

func TestPeerServiceDiscovery(t *testing.T) {
	agents := startAgents(t, 3, relaytest.Options{})
	ps := agents[0] // serves peer.Peer for the cluster
	ps.UpsertPeer("node-1", agents[0].Addr())
	ps.UpsertPeer("node-2", agents[1].Addr())
	r := startRelay(t, testConfig(), nil, &relay.PeerService{
		Address: ps.Addr(), GoneGrace: 300 * time.Millisecond, RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
	})
	names := func(p []relay.PeerInfo) []string {
		var out []string
		for _, pi := range p {
			if pi.State == relaypb.NodeState_NODE_CONNECTED {
				out = append(out, pi.Name)
			}
		}
		return out
	}
	has := func(want ...string) func([]relay.PeerInfo) bool {
		return func(p []relay.PeerInfo) bool { return len(p) == len(want) && slices.Equal(names(p), want) }
	}
	waitPeers(t, r.srv, "node-1 and node-2", has("node-1", "node-2"))

	f := follow(t, r.client, &observerpb.GetFlowsRequest{Follow: true})
	f.untilStatus(t, "node-2", relaypb.NodeState_NODE_CONNECTED)

	ps.UpsertPeer("node-3", agents[2].Addr())
	waitPeers(t, r.srv, "node-3 added", has("node-1", "node-2", "node-3"))
	f.untilStatus(t, "node-3", relaypb.NodeState_NODE_CONNECTED)
	eventually(t, "node-3 streams", func() bool { return len(agents[2].Requests()) > 0 })
	fl := relaytest.Flow("node-3", time.Now(), 1)
	agents[2].Add(fl)
	if got := f.flows(t, 1); got[0].GetUuid() != fl.GetUuid() {
		t.Errorf("got %s, want the flow from the node that joined", got[0].GetUuid())
	}

	ps.DeletePeer("node-2")
	waitPeers(t, r.srv, "node-2 removed", has("node-1", "node-3"))
	f.untilStatus(t, "node-2", relaypb.NodeState_NODE_GONE)

	// A peer deleted while the relay could not hear it goes once the
	// reconnected stream no longer lists it.
	ps.Stop()
	ps.DeletePeer("node-3")
	if err := ps.Restart(); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, r.srv, "node-3 removed after reconnect", has("node-1"))
}
