package relay

import (
	"errors"
	"io"
	"sort"
	"sync"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/observer/aggregate"
)

// getAggregate answers a GetFlows that asks for aggregates (the header
// aggregate.MetadataKey): it asks every agent for its edges, with the same
// header, and sums them. An agent that answers with plain flows (Cilium's,
// which knows no such header) has its flows aggregated here. Lost events
// pass through; agents that fail are named in a NODE_ERROR status event.
func (s *Server) getAggregate(req *observerpb.GetFlowsRequest, stream observerpb.Observer_GetFlowsServer) error {
	if req.GetFollow() {
		return status.Error(codes.InvalidArgument, "aggregates need a finite range: not with follow")
	}
	if req.GetNumber() > 0 {
		return status.Error(codes.InvalidArgument, "aggregates cover a time range (since/until), not a number of flows")
	}
	ctx := stream.Context()
	peers := s.pool.WaitSettled(ctx, s.cfg.PeerDialTimeout)
	set := aggregate.NewSet()
	var mu sync.Mutex // set, stream and failed
	var failed []string
	g, gctx := errgroup.WithContext(aggregate.Ask(ctx))
	for _, p := range peers {
		if p.State != relaypb.NodeState_NODE_CONNECTED {
			mu.Lock()
			failed = append(failed, p.Name)
			mu.Unlock()
			continue
		}
		g.Go(func() error {
			st, err := p.client.GetFlows(gctx, req)
			for err == nil {
				var r *observerpb.GetFlowsResponse
				if r, err = st.Recv(); err != nil {
					break
				}
				mu.Lock()
				if f := r.GetFlow(); f != nil {
					set.Add(f)
				} else if r.GetLostEvents() != nil {
					err = stream.Send(r)
				}
				mu.Unlock()
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			if code := status.Code(err); code == codes.InvalidArgument {
				return err // the request is bad everywhere: say so
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			s.log.Warn("aggregate: peer failed", "peer", p.Name, "error", err)
			mu.Lock()
			failed = append(failed, p.Name)
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if len(failed) > 0 {
		sort.Strings(failed)
		if err := stream.Send(&observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_NodeStatus{NodeStatus: &relaypb.NodeStatusEvent{
				StateChange: relaypb.NodeState_NODE_ERROR, NodeNames: failed,
				Message: "these nodes' flows are missing from the aggregates",
			}},
			NodeName: s.nodeName,
			Time:     timestamppb.Now(),
		}); err != nil {
			return err
		}
	}
	for _, e := range set.Edges() {
		if err := stream.Send(&observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: e.Flow(s.nodeName)},
			NodeName:      s.nodeName,
			Time:          timestamppb.New(e.Last),
		}); err != nil {
			return err
		}
	}
	return nil
}
