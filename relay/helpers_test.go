package relay_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/relay"
	"github.com/loupe-project/loupe/relay/relaytest"
)

// testConfig keeps reconnects and drains short so tests wait little.
func testConfig() relay.Config {
	return relay.Config{
		Lab:                    true,
		SortBufferDrainTimeout: 2 * time.Second,
		ReconnectBaseDelay:     20 * time.Millisecond,
		ReconnectMaxDelay:      200 * time.Millisecond,
	}
}

func startAgents(t testing.TB, n int, opts relaytest.Options) []*relaytest.Agent {
	t.Helper()
	var agents []*relaytest.Agent
	for i := range n {
		o := opts
		o.Name = fmt.Sprintf("node-%d", i+1)
		a, err := relaytest.Start(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Stop)
		agents = append(agents, a)
	}
	return agents
}

func addrs(agents []*relaytest.Agent) relay.StaticPeers {
	var out relay.StaticPeers
	for _, a := range agents {
		out = append(out, a.Addr())
	}
	return out
}

type testRelay struct {
	srv    *relay.Server
	addr   string
	client observerpb.ObserverClient
	conn   *grpc.ClientConn
}

// startRelay serves a relay on loopback and dials it with clientTLS (nil: plain).
func startRelay(t testing.TB, cfg relay.Config, clientTLS *tls.Config, sources ...relay.PeerSource) *testRelay {
	t.Helper()
	srv, err := relay.New(cfg, sources...)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	creds := insecure.NewCredentials()
	if clientTLS != nil {
		creds = credentials.NewTLS(clientTLS)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay serve: %v", err)
		}
	})
	return &testRelay{srv: srv, addr: lis.Addr().String(), client: observerpb.NewObserverClient(conn), conn: conn}
}

// startRelayClient dials a relay with the given TLS configuration.
func startRelayClient(t testing.TB, addr string, cfg *tls.Config) observerpb.ObserverClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return observerpb.NewObserverClient(conn)
}

// waitPeers polls the pool until cond holds for its snapshot.
func waitPeers(t testing.TB, srv *relay.Server, what string, cond func([]relay.PeerInfo) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		peers, changed := srv.Pool().Peers()
		if cond(peers) {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("waiting for peers: %s: last snapshot %+v", what, peers)
		}
	}
}

func connectedCount(peers []relay.PeerInfo) int {
	n := 0
	for _, p := range peers {
		if p.State == relaypb.NodeState_NODE_CONNECTED {
			n++
		}
	}
	return n
}

func waitConnected(t testing.TB, srv *relay.Server, n int) {
	t.Helper()
	waitPeers(t, srv, fmt.Sprintf("%d connected", n), func(p []relay.PeerInfo) bool {
		for _, pi := range p {
			if pi.Version == "" { // not yet asked for its name and version
				return false
			}
		}
		return len(p) == n && connectedCount(p) == n
	})
}

// eventually polls cond until it holds or 20 s pass.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// readAll reads a non-follow stream to its end.
func readAll(t testing.TB, ctx context.Context, c observerpb.ObserverClient, req *observerpb.GetFlowsRequest) ([]*flowpb.Flow, []*relaypb.NodeStatusEvent) {
	t.Helper()
	stream, err := c.GetFlows(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var flows []*flowpb.Flow
	var statuses []*relaypb.NodeStatusEvent
	for {
		r, err := stream.Recv()
		if err != nil {
			if err.Error() == "EOF" {
				return flows, statuses
			}
			t.Fatalf("recv: %v", err)
		}
		if f := r.GetFlow(); f != nil {
			flows = append(flows, f)
		}
		if ns := r.GetNodeStatus(); ns != nil {
			statuses = append(statuses, ns)
		}
	}
}

// follower reads a follow stream in the background.
type follower struct {
	ch     chan *observerpb.GetFlowsResponse
	cancel context.CancelFunc
}

func follow(t testing.TB, c observerpb.ObserverClient, req *observerpb.GetFlowsRequest) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.GetFlows(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	f := &follower{ch: make(chan *observerpb.GetFlowsResponse, 1<<16), cancel: cancel}
	go func() {
		defer close(f.ch)
		for {
			r, err := stream.Recv()
			if err != nil {
				return
			}
			f.ch <- r
		}
	}()
	t.Cleanup(cancel)
	return f
}

// next returns the next response, failing after 20 s.
func (f *follower) next(t testing.TB) *observerpb.GetFlowsResponse {
	t.Helper()
	select {
	case r, ok := <-f.ch:
		if !ok {
			t.Fatal("follow stream ended")
		}
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("no response within 20 s")
	}
	return nil
}

// untilStatus reads until a node status with state naming node, returning
// the flows seen meanwhile.
func (f *follower) untilStatus(t testing.TB, node string, states ...relaypb.NodeState) []*flowpb.Flow {
	t.Helper()
	var flows []*flowpb.Flow
	for {
		r := f.next(t)
		if fl := r.GetFlow(); fl != nil {
			flows = append(flows, fl)
		}
		if ns := r.GetNodeStatus(); ns != nil && slices.Contains(states, ns.GetStateChange()) && slices.Contains(ns.GetNodeNames(), node) {
			return flows
		}
	}
}

// flows reads until n flows have arrived.
func (f *follower) flows(t testing.TB, n int) []*flowpb.Flow {
	t.Helper()
	var flows []*flowpb.Flow
	for len(flows) < n {
		if fl := f.next(t).GetFlow(); fl != nil {
			flows = append(flows, fl)
		}
	}
	return flows
}

func uuids(flows []*flowpb.Flow) []string {
	out := make([]string, len(flows))
	for i, f := range flows {
		out[i] = f.GetUuid()
	}
	return out
}

func sortedByTime(flows []*flowpb.Flow) bool {
	return slices.IsSortedFunc(flows, func(a, b *flowpb.Flow) int {
		return a.GetTime().AsTime().Compare(b.GetTime().AsTime())
	})
}
