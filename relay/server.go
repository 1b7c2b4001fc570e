package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/observer/aggregate"
)

// ObserverServiceName is the health service name Hubble clients check.
const ObserverServiceName = "hubble.server.Observer"

// versionHeader carries the relay version to clients, as Hubble Relay does.
const versionHeader = "hubble-relay-version"

// Server is loupe-relay: a peer pool and the cluster-wide Observer API.
type Server struct {
	observerpb.UnimplementedObserverServer

	cfg      Config
	log      *slog.Logger
	pool     *Pool
	sources  []PeerSource
	health   *health.Server
	nodeName string
	stats    Stats
	// noBatches holds the peers (key and address) that answered
	// FlowBatches with Unimplemented: they get GetFlows.
	noBatches sync.Map
}

// Stats returns the relay's counters.
func (s *Server) Stats() *Stats { return &s.stats }

// New checks cfg and builds a relay fed by the given peer sources.
func New(cfg Config, sources ...PeerSource) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "loupe-relay"
	}
	s := &Server{cfg: cfg, log: cfg.Log, sources: sources, health: health.NewServer(), nodeName: host}
	s.pool = NewPool(&s.cfg)
	return s, nil
}

// Pool is the relay's peer pool.
func (s *Server) Pool() *Pool { return s.pool }

// Run listens on cfg.Listen and serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("relay: listen: %w", err)
	}
	return s.Serve(ctx, lis)
}

// Serve runs the peer sources and the gRPC server on lis until ctx ends.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if !s.cfg.Lab {
		if s.cfg.ServerTLS == nil {
			s.log.Warn("relay listener is plain text (--insecure-listen): clients and their flows are not authenticated or encrypted; use --listen with --tls-server-cert-file, --tls-server-key-file and --tls-server-client-ca-files")
		}
		if s.cfg.ClientTLS == nil {
			s.log.Warn("connections to agents are plain text: set --tls-client-cert-file, --tls-client-key-file and --tls-hubble-server-ca-files for mTLS")
		}
	}
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(relayCodec), // flows leave as they came
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			_ = grpc.SetHeader(ctx, metadata.Pairs(versionHeader, s.cfg.Version))
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			_ = ss.SetHeader(metadata.Pairs(versionHeader, s.cfg.Version))
			return h(srv, ss)
		}),
	}
	servers := []*grpc.Server{}
	if s.cfg.Local != nil {
		// In-process only, so plain text: TLS protects the network.
		local := grpc.NewServer(opts...)
		observerpb.RegisterObserverServer(local, s)
		s.registerSecurityEvents(local)
		s.registerResources(local)
		servers = append(servers, local)
	}
	if s.cfg.ServerTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(s.cfg.ServerTLS)))
	}
	gs := grpc.NewServer(opts...)
	observerpb.RegisterObserverServer(gs, s)
	s.registerSecurityEvents(gs)
	s.registerResources(gs)
	servers = append(servers, gs)
	healthpb.RegisterHealthServer(gs, s.health)
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(ObserverServiceName, healthpb.HealthCheckResponse_SERVING)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	for _, src := range s.sources {
		g.Go(func() error { return src.Run(gctx, s.pool) })
	}
	g.Go(func() error {
		s.log.Info("relay serving", "address", lis.Addr().String(), "tls", s.cfg.ServerTLS != nil)
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("relay: serve: %w", err)
		}
		return nil
	})
	if s.cfg.Local != nil {
		g.Go(func() error {
			if err := servers[0].Serve(s.cfg.Local); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("relay: serve in-process: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		s.health.Shutdown()
		// Follow streams never end on their own: give them a moment, then cut.
		var wg sync.WaitGroup
		for _, srv := range servers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stopped := make(chan struct{})
				go func() { srv.GracefulStop(); close(stopped) }()
				select {
				case <-stopped:
				case <-time.After(2 * time.Second):
					srv.Stop()
				}
			}()
		}
		wg.Wait()
		s.pool.Close()
		return nil
	})
	return g.Wait()
}

// GetFlows fans the request out to every peer and merges the answers.
func (s *Server) GetFlows(req *observerpb.GetFlowsRequest, stream observerpb.Observer_GetFlowsServer) error {
	if aggregate.Requested(stream.Context()) {
		return s.getAggregate(req, stream)
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	q := newOutQueue(s.cfg.ClientQueueLen, false, s.nodeName, &s.stats)
	var collectErr error
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		collectErr = s.getFlows(ctx, req, q)
		q.close()
	}()
	sendErr := q.run(ctx, stream.SendMsg)
	cancel()
	<-collected
	if sendErr != nil {
		return sendErr
	}
	return collectErr
}

// peerResult is one peer's answer in a unary fan-out.
type peerResult[T any] struct {
	peer PeerInfo
	val  T
	err  error
}

// fanOut calls every connected peer concurrently, each within the idle timeout.
func fanOut[T any](ctx context.Context, s *Server, peers []PeerInfo, call func(context.Context, observerpb.ObserverClient) (T, error)) []peerResult[T] {
	out := make([]peerResult[T], len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		out[i].peer = p
		if p.State != relaypb.NodeState_NODE_CONNECTED {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.PeerIdleTimeout)
			defer cancel()
			out[i].val, out[i].err = call(cctx, p.client)
		})
	}
	wg.Wait()
	return out
}

// ServerStatus sums the status of every connected peer.
func (s *Server) ServerStatus(ctx context.Context, _ *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	peers := s.pool.WaitSettled(ctx, s.cfg.PeerDialTimeout)
	res := fanOut(ctx, s, peers, func(ctx context.Context, c observerpb.ObserverClient) (*observerpb.ServerStatusResponse, error) {
		return c.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	})
	out := &observerpb.ServerStatusResponse{Version: s.cfg.Version}
	var connected, unavailable uint32
	for _, r := range res {
		if r.peer.State != relaypb.NodeState_NODE_CONNECTED || r.err != nil {
			unavailable++
			out.UnavailableNodes = append(out.UnavailableNodes, r.peer.Name)
			continue
		}
		connected++
		out.NumFlows += r.val.GetNumFlows()
		out.MaxFlows += r.val.GetMaxFlows()
		out.SeenFlows += r.val.GetSeenFlows()
		out.FlowsRate += r.val.GetFlowsRate()
		out.UptimeNs = max(out.UptimeNs, r.val.GetUptimeNs())
	}
	sort.Strings(out.UnavailableNodes)
	out.NumConnectedNodes = wrapperspb.UInt32(connected)
	out.NumUnavailableNodes = wrapperspb.UInt32(unavailable)
	return out, nil
}

// GetNodes lists every peer with its state, and its flow counters when connected.
func (s *Server) GetNodes(ctx context.Context, _ *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	peers := s.pool.WaitSettled(ctx, s.cfg.PeerDialTimeout)
	res := fanOut(ctx, s, peers, func(ctx context.Context, c observerpb.ObserverClient) (*observerpb.ServerStatusResponse, error) {
		return c.ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	})
	out := &observerpb.GetNodesResponse{}
	for _, r := range res {
		n := &observerpb.Node{
			Name:    r.peer.Name,
			Version: r.peer.Version,
			Address: r.peer.Address,
			State:   r.peer.State,
			Tls:     &observerpb.TLS{Enabled: r.peer.TLS, ServerName: r.peer.TLSServerName},
		}
		if r.peer.State == relaypb.NodeState_NODE_CONNECTED {
			if r.err != nil {
				n.State = relaypb.NodeState_NODE_ERROR
			} else {
				n.UptimeNs = r.val.GetUptimeNs()
				n.NumFlows = r.val.GetNumFlows()
				n.MaxFlows = r.val.GetMaxFlows()
				n.SeenFlows = r.val.GetSeenFlows()
				if n.Version == "" {
					n.Version = r.val.GetVersion()
				}
			}
		}
		out.Nodes = append(out.Nodes, n)
	}
	return out, nil
}

// GetNamespaces merges the namespaces every connected peer has seen.
func (s *Server) GetNamespaces(ctx context.Context, _ *observerpb.GetNamespacesRequest) (*observerpb.GetNamespacesResponse, error) {
	peers := s.pool.WaitSettled(ctx, s.cfg.PeerDialTimeout)
	res := fanOut(ctx, s, peers, func(ctx context.Context, c observerpb.ObserverClient) (*observerpb.GetNamespacesResponse, error) {
		return c.GetNamespaces(ctx, &observerpb.GetNamespacesRequest{})
	})
	type key struct{ cluster, ns string }
	seen := map[key]bool{}
	out := &observerpb.GetNamespacesResponse{}
	for _, r := range res {
		if r.err != nil {
			s.log.Warn("get namespaces from peer", "peer", r.peer.Name, "error", r.err)
			continue
		}
		for _, ns := range r.val.GetNamespaces() {
			k := key{ns.GetCluster(), ns.GetNamespace()}
			if !seen[k] {
				seen[k] = true
				out.Namespaces = append(out.Namespaces, ns)
			}
		}
	}
	sort.Slice(out.Namespaces, func(i, j int) bool {
		a, b := out.Namespaces[i], out.Namespaces[j]
		if a.GetCluster() != b.GetCluster() {
			return a.GetCluster() < b.GetCluster()
		}
		return a.GetNamespace() < b.GetNamespace()
	})
	return out, nil
}
