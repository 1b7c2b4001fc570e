package observer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	peerpb "github.com/cilium/cilium/api/v1/peer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/observer/aggregate"
	"github.com/loupe-project/loupe/observer/filters"
	"github.com/loupe-project/loupe/observer/flowwire"
)

// HealthService is the name the health service reports, as Hubble's.
const HealthService = "hubble.server.Observer"

// Serve serves the Observer, Peer and health services on listenAddr (TCP,
// with TLS if configured) and on unixSocketPath (plain text, mode 0600),
// until ctx is done. An empty address skips that listener.
func (o *Observer) Serve(ctx context.Context, listenAddr, unixSocketPath string) error {
	var tcp, unixL net.Listener
	if listenAddr != "" {
		l, err := net.Listen("tcp", listenAddr)
		if err != nil {
			return fmt.Errorf("observer listen: %w", err)
		}
		tcp = l
	}
	if unixSocketPath != "" {
		_ = os.Remove(unixSocketPath) // a stale socket from a previous run
		l, err := net.Listen("unix", unixSocketPath)
		if err != nil {
			if tcp != nil {
				tcp.Close()
			}
			return fmt.Errorf("observer listen unix: %w", err)
		}
		if err := os.Chmod(unixSocketPath, 0o600); err != nil {
			l.Close()
			if tcp != nil {
				tcp.Close()
			}
			return fmt.Errorf("observer socket mode: %w", err)
		}
		unixL = l
	}
	return o.ServeListeners(ctx, tcp, unixL)
}

// ServeListeners is Serve on listeners the caller made; either may be nil.
// TLS, if configured, applies to tcp only.
func (o *Observer) ServeListeners(ctx context.Context, tcp, unixL net.Listener) error {
	g, ctx := errgroup.WithContext(ctx)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(HealthService, healthpb.HealthCheckResponse_SERVING)
	var servers []*grpc.Server
	start := func(l net.Listener, opts ...grpc.ServerOption) {
		s := grpc.NewServer(append(opts, serverCodecOption())...)
		o.register(s, true)
		healthpb.RegisterHealthServer(s, hs)
		servers = append(servers, s)
		o.log.Info("observer listening", "addr", l.Addr().String())
		g.Go(func() error {
			if err := s.Serve(l); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("observer serve %s: %w", l.Addr(), err)
			}
			return nil
		})
	}
	if tcp != nil {
		var opts []grpc.ServerOption
		if o.cfg.TLS.Enabled() {
			tc, err := o.cfg.TLS.ServerConfig()
			if err != nil {
				tcp.Close()
				if unixL != nil {
					unixL.Close()
				}
				return fmt.Errorf("observer: %w", err)
			}
			opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
		}
		start(tcp, opts...)
	}
	if unixL != nil {
		start(unixL)
	}
	if o.hist != nil {
		g.Go(func() error { return o.writeHistory(ctx) })
	}
	g.Go(func() error {
		<-ctx.Done()
		hs.Shutdown()
		for _, s := range servers {
			stopGracefully(s, 2*time.Second)
		}
		return nil
	})
	return g.Wait()
}

// stopGracefully lets unary calls finish but does not wait forever for
// followers, whose streams only end with the client.
func stopGracefully(s *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		s.Stop()
	}
}

// Register adds the Observer and Peer services to s (health is separate).
func (o *Observer) Register(s *grpc.Server) { o.register(s, false) }

// register adds the services; encoded says that s runs wireCodec, so that
// followers may send flows already encoded.
func (o *Observer) register(s *grpc.Server, encoded bool) {
	obs := &observerServer{o: o, encoded: encoded}
	observerpb.RegisterObserverServer(s, obs)
	if encoded {
		registerFlowBatches(s, obs)
	}
	peerpb.RegisterPeerServer(s, &peerServer{o: o})
	for _, reg := range o.cfg.Services {
		reg(s)
	}
}

type observerServer struct {
	observerpb.UnimplementedObserverServer
	o *Observer
	// encoded: the server runs wireCodec (ServeListeners' servers do).
	encoded bool
}

// responseWriter appends the GetFlowsResponse of e's flow (out is it or
// its field-masked copy) to b.
type responseWriter func(b []byte, e *entry, out *flowpb.Flow) ([]byte, error)

// flowSender returns how GetFlows sends a flow (out, which is e's flow or
// its field-masked copy): on a wireCodec server, written by flowwire and
// sent as bytes, or added to the batch of a FlowBatches stream. A whole
// flow's wire form is shared through the entry with the history writer,
// which would write it too (see entry.wire).
func (s *observerServer) flowSender(stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) func(e *entry, out *flowpb.Flow) error {
	enc := flowwire.NewEncoder().SkipUnknownFields() // the decoder's flows have none
	var wireScratch []byte
	var write responseWriter = func(b []byte, e *entry, out *flowpb.Flow) ([]byte, error) {
		f := e.flow
		var err error
		if w := s.o.sharedWire(e, enc, &wireScratch); out == f && w != nil {
			b, err = enc.AppendFlowResponseWire(b, w, f.GetNodeName(), f.GetTime())
		} else {
			b, err = enc.AppendFlowResponse(b, out, f.GetNodeName(), f.GetTime())
		}
		if err != nil {
			return b, status.Errorf(codes.Internal, "flow %s: %v", f.GetUuid(), err)
		}
		return b, nil
	}
	if bs, ok := stream.(*batchStream); ok {
		return func(e *entry, out *flowpb.Flow) error { return bs.appendResponse(write, e, out) }
	}
	if _, inner := stream.(*aggStream); s.encoded && !inner {
		var scratch []byte
		return func(e *entry, out *flowpb.Flow) error {
			var err error
			if scratch, err = write(scratch[:0], e, out); err != nil {
				return err
			}
			return stream.SendMsg(newEncodedResponse(scratch))
		}
	}
	return func(e *entry, out *flowpb.Flow) error {
		f := e.flow
		return stream.Send(&observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: out},
			NodeName:      f.GetNodeName(),
			Time:          f.GetTime(),
		})
	}
}

// sharedWire returns e's flow's wire form when the history writer has yet
// to write it: written here once and left in the entry, where the writer
// takes it. Nil without a history or once the writer has passed e (it
// marks the entry wireTaken, so bytes are never left behind in the ring).
func (o *Observer) sharedWire(e *entry, enc *flowwire.Encoder, scratch *[]byte) []byte {
	if o.hist == nil {
		return nil
	}
	switch w := e.wire.Load(); w {
	case wireTaken:
		return nil
	case nil:
	default:
		return *w
	}
	w, err := enc.Append((*scratch)[:0], e.flow)
	if err != nil {
		return nil
	}
	*scratch = w
	// One allocation of the exact size: appending to nil would grow the
	// slice through every power of two.
	b := append(make([]byte, 0, len(w)), w...)
	// When this fails, another follower was first or the writer passed
	// meanwhile: b is as good, only not shared.
	e.wire.CompareAndSwap(nil, &b)
	return b
}

func (s *observerServer) ServerStatus(ctx context.Context, _ *observerpb.ServerStatusRequest) (*observerpb.ServerStatusResponse, error) {
	o := s.o
	return &observerpb.ServerStatusResponse{
		NumFlows:            o.ring.len(),
		MaxFlows:            o.ring.capacity(),
		SeenFlows:           o.seen.Load(),
		UptimeNs:            uint64(time.Since(o.start).Nanoseconds()),
		Version:             o.cfg.Version,
		FlowsRate:           o.flowsRate(time.Now()),
		NumConnectedNodes:   wrapperspb.UInt32(1),
		NumUnavailableNodes: wrapperspb.UInt32(0),
	}, nil
}

// flowsRate is flows per second over the last minute, counted in the ring.
func (o *Observer) flowsRate(now time.Time) float64 {
	const window = time.Minute
	since := now.Add(-window)
	n := 0
	head := o.ring.head.Load()
	for seq := head; seq > o.ring.oldest(head); seq-- {
		e, _ := o.ring.read(seq - 1)
		if e == nil || e.time().AsTime().Before(since) {
			break
		}
		if e.flow != nil {
			n++
		}
	}
	return float64(n) / window.Seconds()
}

func (s *observerServer) GetNodes(ctx context.Context, _ *observerpb.GetNodesRequest) (*observerpb.GetNodesResponse, error) {
	o := s.o
	addr := o.cfg.Address
	if addr == "" {
		for _, n := range o.cfg.Metadata.Current().Nodes {
			if n.Name == o.cfg.NodeName {
				addr = peerAddress(n)
			}
		}
	}
	node := &observerpb.Node{
		Name:      o.cfg.NodeName,
		Version:   o.cfg.Version,
		Address:   addr,
		State:     relaypb.NodeState_NODE_CONNECTED,
		UptimeNs:  uint64(time.Since(o.start).Nanoseconds()),
		NumFlows:  o.ring.len(),
		MaxFlows:  o.ring.capacity(),
		SeenFlows: o.seen.Load(),
	}
	if o.cfg.TLS.Enabled() {
		node.Tls = &observerpb.TLS{Enabled: true, ServerName: contract.TLSServerName(o.cfg.NodeName)}
	}
	return &observerpb.GetNodesResponse{Nodes: []*observerpb.Node{node}}, nil
}

func (s *observerServer) GetNamespaces(ctx context.Context, _ *observerpb.GetNamespacesRequest) (*observerpb.GetNamespacesResponse, error) {
	snap := s.o.cfg.Metadata.Current()
	seen := map[string]bool{}
	for _, ns := range snap.Namespaces {
		seen[ns.Name] = true
	}
	for _, p := range snap.Pods {
		seen[p.Namespace] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		if n != "" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	resp := &observerpb.GetNamespacesResponse{}
	for _, n := range names {
		resp.Namespaces = append(resp.Namespaces, &observerpb.Namespace{Namespace: n})
	}
	return resp, nil
}

func (s *observerServer) GetFlows(req *observerpb.GetFlowsRequest, stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) error {
	if _, inner := stream.(*aggStream); !inner && aggregate.Requested(stream.Context()) {
		return s.getAggregate(req, stream)
	}
	o := s.o
	wl, err := filters.BuildList(req.GetWhitelist())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "whitelist: %v", err)
	}
	bl, err := filters.BuildList(req.GetBlacklist())
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "blacklist: %v", err)
	}
	mask, err := newFieldMask(req.GetFieldMask())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	var since, until time.Time
	if req.GetSince() != nil {
		if err := req.GetSince().CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "since: %v", err)
		}
		since = req.GetSince().AsTime()
	}
	if req.GetUntil() != nil {
		if err := req.GetUntil().CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "until: %v", err)
		}
		until = req.GetUntil().AsTime()
	}
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		return status.Error(codes.InvalidArgument, "until is before since")
	}
	match := func(f *flowpb.Flow) bool {
		if !since.IsZero() || !until.IsZero() {
			t := f.GetTime().AsTime()
			if (!since.IsZero() && t.Before(since)) || (!until.IsZero() && t.After(until)) {
				return false
			}
		}
		return filters.Apply(wl, bl, f)
	}

	ctx := stream.Context()
	r := o.ring
	head := r.head.Load()
	number := req.GetNumber()
	follow := req.GetFollow()
	start := r.oldest(head)
	switch {
	case req.GetFirst():
		// Oldest first, from the start of the ring.
	case number > 0:
		// The last number matching flows: find where they begin.
		var found uint64
		for seq := head; seq > r.oldest(head) && found < number; seq-- {
			e, _ := r.read(seq - 1)
			if e == nil {
				break
			}
			if e.flow != nil && match(e.flow) {
				found++
				start = seq - 1
			}
		}
		if found == 0 {
			start = head
		}
	case follow && since.IsZero():
		start = head // only new flows
	}
	// Without follow, stop at what existed when the request came in.
	end := head
	sent := uint64(0)
	if number == 0 || req.GetFirst() {
		if o.historyCovers(since, head) {
			// The ring no longer reaches back to since: the disk first.
			next, n, done, err := o.replayHistory(ctx, stream.Send, since, until, podPrefilter(req.GetWhitelist()), match, mask, number)
			if err != nil || done {
				return err
			}
			start, sent = next, n
		}
	}
	send := s.flowSender(stream)
	// A plain follower behind the history writer takes its blocks.
	plain := follow && !(req.GetFirst() && number > 0) && until.IsZero() &&
		len(req.GetWhitelist()) == 0 && len(req.GetBlacklist()) == 0 && mask == nil
	blocks := s.newBlockSender(stream, plain, since)
	blocks.start()
	defer blocks.stop()
	var marks watermarks
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for seq := start; ; {
		if !follow && seq >= end {
			return nil
		}
		if next, err := blocks.send(seq); err != nil {
			return err
		} else if next != seq {
			seq = next
			continue
		}
		e, lost := r.read(seq)
		if e == nil && lost > 0 {
			if err := stream.Send(o.lostResponse(lost)); err != nil {
				return err
			}
			seq += lost
			continue
		}
		if e == nil && follow {
			if wm := marks.due(o, seq, time.Now()); wm != nil {
				if err := stream.Send(wm); err != nil {
					return err
				}
			}
			if err := flushBeforeWait(stream); err != nil {
				return err
			}
			timer.Reset(time.Until(marks.next))
			if _, err := r.waitOr(ctx, seq, timer.C); err != nil {
				return nil // the client went away
			}
			continue
		}
		if e == nil {
			if err := flushBeforeWait(stream); err != nil {
				return err
			}
			if err := r.wait(ctx, seq); err != nil {
				return nil // the client went away
			}
			continue
		}
		seq++
		if e.lost != nil {
			// As Hubble: filters do not apply to lost events and they do
			// not count towards number; since and until do.
			if t := e.time().AsTime(); (since.IsZero() || !t.Before(since)) && (until.IsZero() || !t.After(until)) {
				if err := stream.Send(o.datapathLostResponse(e.lost)); err != nil {
					return err
				}
			}
			continue
		}
		f := e.flow
		if !until.IsZero() && f.GetTime().AsTime().After(until) {
			return nil // flows are in time order: none later will match
		}
		if !match(f) {
			continue
		}
		out := f
		if mask != nil {
			out = mask.apply(f)
		}
		if err := send(e, out); err != nil {
			return err
		}
		sent++
		if req.GetFirst() && number > 0 && sent >= number {
			return nil
		}
	}
}

func (o *Observer) lostResponse(n uint64) *observerpb.GetFlowsResponse {
	now := timestamppb.Now()
	return &observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &flowpb.LostEvent{
			Source:        flowpb.LostEventSource_HUBBLE_RING_BUFFER,
			NumEventsLost: n,
		}},
		NodeName: o.cfg.NodeName,
		Time:     now,
	}
}

func (o *Observer) datapathLostResponse(rec *lostRecord) *observerpb.GetFlowsResponse {
	return &observerpb.GetFlowsResponse{
		ResponseTypes: &observerpb.GetFlowsResponse_LostEvents{LostEvents: &rec.event},
		NodeName:      o.cfg.NodeName,
		Time:          &rec.at,
	}
}
