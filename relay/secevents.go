package relay

import (
	"context"
	"slices"
	"sync"
	"time"

	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/secevents/server"
)

// LostRelayQueue is the LostEvents source for events a slow follow client
// of the relay missed.
const LostRelayQueue = "relay_queue"

// securityEvents merges the agents' SecurityEvents services.
type securityEvents struct {
	pb.UnimplementedSecurityEventsServer
	s *Server
}

func (s *Server) registerSecurityEvents(r grpc.ServiceRegistrar) {
	pb.RegisterSecurityEventsServer(r, &securityEvents{s: s})
}

// GetEvents asks every agent and merges: the events kept, in time order
// (the last number of them over the whole cluster), then, with follow,
// each agent's new events as they come.
func (se *securityEvents) GetEvents(req *pb.GetEventsRequest, stream grpc.ServerStreamingServer[pb.GetEventsResponse]) error {
	if _, err := server.NewFilter(req); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ctx := stream.Context()
	s := se.s
	start := time.Now().UnixNano()
	peers := s.pool.WaitSettled(ctx, s.cfg.PeerDialTimeout)
	hist := &pb.GetEventsRequest{Number: req.Number, SinceUnixNano: req.SinceUnixNano, Namespace: req.Namespace,
		Pod: req.Pod, Rule: req.Rule, MinPriority: req.MinPriority}
	var mu sync.Mutex
	var all []*pb.GetEventsResponse
	last := map[string]int64{} // peer key → newest time sent
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.State != relaypb.NodeState_NODE_CONNECTED || p.conn == nil {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.PeerIdleTimeout)
			defer cancel()
			st, err := pb.NewSecurityEventsClient(p.conn).GetEvents(cctx, hist)
			if err != nil {
				return
			}
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				mu.Lock()
				all = append(all, r)
				last[p.Key] = max(last[p.Key], r.GetTimeUnixNano())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortStableFunc(all, func(a, b *pb.GetEventsResponse) int {
		return compareInt64(a.GetTimeUnixNano(), b.GetTimeUnixNano())
	})
	for _, r := range server.Last(all, req.GetNumber()) {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	if !req.GetFollow() {
		return nil
	}
	return se.follow(ctx, req, stream, start, last)
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// follow streams every connected agent's new events, from where the
// history left off (or the request's start), restarting a stream when
// its agent reconnects. A full queue is reported as lost events.
func (se *securityEvents) follow(ctx context.Context, req *pb.GetEventsRequest, stream grpc.ServerStreamingServer[pb.GetEventsResponse], start int64, last map[string]int64) error {
	s := se.s
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	q := make(chan *pb.GetEventsResponse, s.cfg.ClientQueueLen)
	var dropped sync.Mutex
	var lost uint64
	running := map[string]uint64{} // peer key → connection generation streamed
	var mu sync.Mutex
	startPeer := func(p PeerInfo) {
		mu.Lock()
		since := max(last[p.Key]+1, start)
		mu.Unlock()
		r := &pb.GetEventsRequest{Follow: true, SinceUnixNano: since, Namespace: req.Namespace, Pod: req.Pod,
			Rule: req.Rule, MinPriority: req.MinPriority}
		go func() {
			st, err := pb.NewSecurityEventsClient(p.conn).GetEvents(ctx, r)
			if err != nil {
				return
			}
			for {
				ev, err := st.Recv()
				if err != nil {
					return
				}
				mu.Lock()
				last[p.Key] = max(last[p.Key], ev.GetTimeUnixNano())
				mu.Unlock()
				select {
				case q <- ev:
				default:
					dropped.Lock()
					lost++
					dropped.Unlock()
				}
			}
		}()
	}
	for {
		peers, changed := s.pool.Peers()
		for _, p := range peers {
			if g, ok := running[p.Key]; p.State != relaypb.NodeState_NODE_CONNECTED || p.conn == nil || (ok && g == p.Gen) {
				continue
			}
			running[p.Key] = p.Gen
			startPeer(p)
		}
	drain:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-changed:
				break drain
			case ev := <-q:
				dropped.Lock()
				n := lost
				lost = 0
				dropped.Unlock()
				if n > 0 {
					if err := stream.Send(&pb.GetEventsResponse{NodeName: s.nodeName, TimeUnixNano: time.Now().UnixNano(),
						ResponseTypes: &pb.GetEventsResponse_LostEvents{LostEvents: &pb.LostEvents{Source: LostRelayQueue, Count: n}}}); err != nil {
						return err
					}
				}
				if err := stream.Send(ev); err != nil {
					return err
				}
			}
		}
	}
}
