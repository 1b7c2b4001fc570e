// Package relaytest runs in-process agents for relay tests and benchmarks:
// real gRPC servers on loopback that serve the Hubble Observer and Peer APIs
// from a flow ring the test fills.
package relaytest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	peerpb "github.com/cilium/cilium/api/v1/peer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Options configures an Agent.
type Options struct {
	Name string
	// Addr to listen on; "" picks a free loopback port.
	Addr string
	// TLS, when set, secures the listener (require client certificates
	// through its ClientAuth).
	TLS *tls.Config
	// Capacity of the flow ring (default 4095).
	Capacity int
	Version  string
	// Watermarks, when set, makes follow streams send a watermark this
	// often once they have sent every flow, as loupe agents do (see
	// observer.WatermarkInterval): a response with no type whose time no
	// later flow is older than. The time is now minus the interval, so a
	// flow must reach Add within the interval of its stamp.
	Watermarks time.Duration
	// Register, when set, adds services of the real agent (say the
	// Resources service) to the fake's server.
	Register func(grpc.ServiceRegistrar)
}

type entry struct {
	seq uint64
	f   *flowpb.Flow
	raw []byte // the GetFlowsResponse carrying f, encoded once
}

// rawMsg is a message encoded ahead of time: replaying recorded flows costs
// the agent a write, not a marshal, so benchmarks measure the relay.
type rawMsg struct{ b []byte }

// rawCodec is the proto codec that passes rawMsg through untouched.
type rawCodec struct{ encoding.CodecV2 }

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*rawMsg); ok {
		return mem.BufferSlice{mem.SliceBuffer(r.b)}, nil
	}
	return c.CodecV2.Marshal(v)
}

// Agent is a fake loupe agent. Its methods are safe for concurrent use.
type Agent struct {
	opts  Options
	start time.Time

	mu       sync.Mutex
	addr     string
	srv      *grpc.Server
	ring     []entry
	seq      uint64
	grew     chan struct{} // closed when flows are added
	stall    bool
	noMarks  bool // watermarks paused
	requests []*observerpb.GetFlowsRequest
	peers    map[string]*peerpb.ChangeNotification
	peerSubs map[chan *peerpb.ChangeNotification]struct{}
}

// Start starts an agent.
func Start(opts Options) (*Agent, error) {
	if opts.Capacity == 0 {
		opts.Capacity = 4095
	}
	if opts.Version == "" {
		opts.Version = "fake-agent"
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	a := &Agent{opts: opts, start: time.Now(), grew: make(chan struct{}),
		peers: map[string]*peerpb.ChangeNotification{}, peerSubs: map[chan *peerpb.ChangeNotification]struct{}{}}
	if err := a.listen(opts.Addr); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agent) listen(addr string) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("fake agent %s: listen: %w", a.opts.Name, err)
	}
	opts := []grpc.ServerOption{grpc.ForceServerCodecV2(rawCodec{encoding.GetCodecV2(protoenc.Name)})}
	if a.opts.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(a.opts.TLS)))
	}
	srv := grpc.NewServer(opts...)
	observerpb.RegisterObserverServer(srv, &observerServer{a: a})
	peerpb.RegisterPeerServer(srv, &peerServer{a: a})
	if a.opts.Register != nil {
		a.opts.Register(srv)
	}
	h := health.NewServer()
	h.SetServingStatus("hubble.server.Observer", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, h)
	a.mu.Lock()
	a.addr = lis.Addr().String()
	a.srv = srv
	a.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
	return nil
}

// PauseWatermarks stops (true) or resumes the watermarks of follow streams,
// as an agent would that fell behind its events.
func (a *Agent) PauseWatermarks(pause bool) {
	a.mu.Lock()
	a.noMarks = pause
	a.mu.Unlock()
}

// Name is the agent's node name.
func (a *Agent) Name() string { return a.opts.Name }

// Addr is the address the agent listens on (kept across Restart).
func (a *Agent) Addr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.addr
}

// Stop kills the server and every connection, like a crashed agent.
func (a *Agent) Stop() {
	a.mu.Lock()
	srv := a.srv
	a.srv = nil
	a.mu.Unlock()
	if srv != nil {
		srv.Stop()
	}
}

// Restart serves again on the same address, keeping the flow ring.
func (a *Agent) Restart() error {
	a.Stop()
	return a.listen(a.Addr())
}

// SetStall makes GetFlows hang without sending anything.
func (a *Agent) SetStall(v bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stall = v
}

// Requests returns the GetFlows requests received so far.
func (a *Agent) Requests() []*observerpb.GetFlowsRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.requests)
}

// Add appends flows to the ring, overwriting the oldest when it is full,
// and wakes followers.
func (a *Agent) Add(flows ...*flowpb.Flow) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, f := range flows {
		a.seq++
		raw, err := proto.Marshal(&observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: f}, NodeName: a.opts.Name, Time: f.GetTime(),
		})
		if err != nil {
			panic(fmt.Sprintf("fake agent: marshal flow: %v", err)) // a bug in the test's flow
		}
		a.ring = append(a.ring, entry{a.seq, f, raw})
	}
	if over := len(a.ring) - a.opts.Capacity; over > 0 {
		a.ring = append(a.ring[:0], a.ring[over:]...)
	}
	close(a.grew)
	a.grew = make(chan struct{})
}

// UpsertPeer announces a peer on the Notify stream.
func (a *Agent) UpsertPeer(name, addr string) {
	a.publish(name, addr, peerpb.ChangeNotificationType_PEER_ADDED)
}

// DeletePeer announces that a peer left.
func (a *Agent) DeletePeer(name string) {
	a.publish(name, "", peerpb.ChangeNotificationType_PEER_DELETED)
}

func (a *Agent) publish(name, addr string, typ peerpb.ChangeNotificationType) {
	a.mu.Lock()
	defer a.mu.Unlock()
	cn := &peerpb.ChangeNotification{Name: name, Address: addr, Type: typ}
	if typ == peerpb.ChangeNotificationType_PEER_DELETED {
		if old, ok := a.peers[name]; ok {
			cn.Address = old.Address
		}
		delete(a.peers, name)
	} else {
		if _, ok := a.peers[name]; ok {
			cn.Type = peerpb.ChangeNotificationType_PEER_UPDATED
		}
		a.peers[name] = cn
	}
	for ch := range a.peerSubs {
		select {
		case ch <- cn:
		default: // a test subscriber that stopped reading
		}
	}
}

type observerServer struct {
	observerpb.UnimplementedObserverServer
	a *Agent
}

func (s *observerServer) GetFlows(req *observerpb.GetFlowsRequest, stream observerpb.Observer_GetFlowsServer) error {
	a := s.a
	match, err := compile(req)
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.requests = append(a.requests, proto.Clone(req).(*observerpb.GetFlowsRequest))
	stall := a.stall
	ring := slices.Clone(a.ring)
	grew := a.grew
	last := a.seq
	a.mu.Unlock()
	if stall {
		<-stream.Context().Done()
		return nil
	}
	send := func(e entry) error { return stream.SendMsg(&rawMsg{e.raw}) }
	var hist []entry
	if !req.GetFollow() || req.GetNumber() > 0 || req.GetSince() != nil {
		for _, e := range ring {
			if match(e.f) {
				hist = append(hist, e)
			}
		}
	}
	if n := req.GetNumber(); n > 0 && uint64(len(hist)) > n {
		if req.GetFirst() {
			hist = hist[:n]
		} else {
			hist = hist[uint64(len(hist))-n:]
		}
	}
	for _, e := range hist {
		if err := send(e); err != nil {
			return err
		}
	}
	if !req.GetFollow() {
		return nil
	}
	var tick <-chan time.Time
	if a.opts.Watermarks > 0 {
		t := time.NewTicker(a.opts.Watermarks)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-grew:
		case <-tick:
			// Taken before the check: flows added later are stamped later.
			now := time.Now().Add(-a.opts.Watermarks)
			a.mu.Lock()
			caughtUp := a.seq == last && !a.noMarks
			a.mu.Unlock()
			if caughtUp {
				if err := stream.Send(&observerpb.GetFlowsResponse{NodeName: a.opts.Name, Time: timestamppb.New(now)}); err != nil {
					return err
				}
			}
			continue
		case <-stream.Context().Done():
			return nil
		}
		a.mu.Lock()
		var fresh []entry
		if len(a.ring) > 0 && a.ring[0].seq > last+1 {
			lost := a.ring[0].seq - last - 1
			a.mu.Unlock()
			if err := stream.Send(&observerpb.GetFlowsResponse{
				NodeName: a.opts.Name, Time: timestamppb.Now(),
				ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
					Source: flowpb.LostEventSource_HUBBLE_RING_BUFFER, NumEventsLost: lost,
				}},
			}); err != nil {
				return err
			}
			a.mu.Lock()
			last = a.ring[0].seq - 1
		}
		i := sort.Search(len(a.ring), func(i int) bool { return a.ring[i].seq > last })
		fresh = slices.Clone(a.ring[i:])
		grew = a.grew
		a.mu.Unlock()
		for _, e := range fresh {
			last = e.seq
			if !match(e.f) {
				continue
			}
			if err := send(e); err != nil {
				return err
			}
		}
	}
}

func (s *observerServer) ServerStatus(context.Context, *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	return &observerpb.ServerStatusResponse{
		NumFlows: uint64(len(a.ring)), MaxFlows: uint64(a.opts.Capacity), SeenFlows: a.seq,
		UptimeNs: uint64(time.Since(a.start)), Version: a.opts.Version, FlowsRate: 1.5,
	}, nil
}

func (s *observerServer) GetNodes(context.Context, *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	a := s.a
	return &observerpb.GetNodesResponse{Nodes: []*observerpb.Node{{
		Name: a.opts.Name, Version: a.opts.Version, Address: a.Addr(), State: relaypb.NodeState_NODE_CONNECTED,
		Tls: &observerpb.TLS{Enabled: a.opts.TLS != nil},
	}}}, nil
}

func (s *observerServer) GetNamespaces(context.Context, *observerpb.GetNamespacesRequest) (*observerpb.GetNamespacesResponse, error) {
	a := s.a
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	out := &observerpb.GetNamespacesResponse{}
	for _, e := range a.ring {
		for _, ns := range []string{e.f.GetSource().GetNamespace(), e.f.GetDestination().GetNamespace()} {
			if ns != "" && !seen[ns] {
				seen[ns] = true
				out.Namespaces = append(out.Namespaces, &observerpb.Namespace{Namespace: ns})
			}
		}
	}
	return out, nil
}

type peerServer struct {
	peerpb.UnimplementedPeerServer
	a *Agent
}

func (s *peerServer) Notify(_ *peerpb.NotifyRequest, stream peerpb.Peer_NotifyServer) error {
	a := s.a
	ch := make(chan *peerpb.ChangeNotification, 64)
	a.mu.Lock()
	var initial []*peerpb.ChangeNotification
	for _, cn := range a.peers {
		initial = append(initial, &peerpb.ChangeNotification{Name: cn.Name, Address: cn.Address, Type: peerpb.ChangeNotificationType_PEER_ADDED})
	}
	a.peerSubs[ch] = struct{}{}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.peerSubs, ch)
		a.mu.Unlock()
	}()
	for _, cn := range initial {
		if err := stream.Send(cn); err != nil {
			return err
		}
	}
	for {
		select {
		case cn := <-ch:
			if err := stream.Send(cn); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// compile builds the request's matcher. It supports enough of Hubble's
// filters to prove that the relay forwards them: source_pod (prefix),
// source_ip, node_name and verdict; fields AND, values OR, whitelist OR,
// blacklist NOR; since and until.
func compile(req *observerpb.GetFlowsRequest) (func(*flowpb.Flow) bool, error) {
	build := func(ff *flowpb.FlowFilter) (func(*flowpb.Flow) bool, error) {
		var checks []func(*flowpb.Flow) bool
		if v := ff.GetSourcePod(); len(v) > 0 {
			checks = append(checks, func(f *flowpb.Flow) bool {
				p := f.GetSource().GetNamespace() + "/" + f.GetSource().GetPodName()
				return slices.ContainsFunc(v, func(s string) bool { return strings.HasPrefix(p, s) })
			})
		}
		if v := ff.GetSourceIp(); len(v) > 0 {
			var pfx []netip.Prefix
			for _, s := range v {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					addr, aerr := netip.ParseAddr(s)
					if aerr != nil {
						return nil, status.Errorf(codes.InvalidArgument, "source_ip: invalid IP or CIDR %q", s)
					}
					p = netip.PrefixFrom(addr, addr.BitLen())
				}
				pfx = append(pfx, p)
			}
			checks = append(checks, func(f *flowpb.Flow) bool {
				addr, err := netip.ParseAddr(f.GetIP().GetSource())
				return err == nil && slices.ContainsFunc(pfx, func(p netip.Prefix) bool { return p.Contains(addr) })
			})
		}
		if v := ff.GetNodeName(); len(v) > 0 {
			checks = append(checks, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetNodeName()) })
		}
		if v := ff.GetVerdict(); len(v) > 0 {
			checks = append(checks, func(f *flowpb.Flow) bool { return slices.Contains(v, f.GetVerdict()) })
		}
		return func(f *flowpb.Flow) bool {
			for _, c := range checks {
				if !c(f) {
					return false
				}
			}
			return true
		}, nil
	}
	var wl, bl []func(*flowpb.Flow) bool
	for _, ff := range req.GetWhitelist() {
		m, err := build(ff)
		if err != nil {
			return nil, err
		}
		wl = append(wl, m)
	}
	for _, ff := range req.GetBlacklist() {
		m, err := build(ff)
		if err != nil {
			return nil, err
		}
		bl = append(bl, m)
	}
	var since, until time.Time
	if req.GetSince() != nil {
		since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		until = req.GetUntil().AsTime()
	}
	return func(f *flowpb.Flow) bool {
		t := f.GetTime().AsTime()
		if !since.IsZero() && t.Before(since) || !until.IsZero() && t.After(until) {
			return false
		}
		if len(wl) > 0 && !slices.ContainsFunc(wl, func(m func(*flowpb.Flow) bool) bool { return m(f) }) {
			return false
		}
		return !slices.ContainsFunc(bl, func(m func(*flowpb.Flow) bool) bool { return m(f) })
	}, nil
}
