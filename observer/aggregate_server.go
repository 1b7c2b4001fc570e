package observer

import (
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/observer/aggregate"
)

// aggStream is the stream GetFlows writes to when aggregates were asked
// for: flows go into edges, lost events pass through (an aggregate must not
// hide what is missing), watermarks are dropped.
type aggStream struct {
	grpc.ServerStreamingServer[observerpb.GetFlowsResponse]
	set *aggregate.Set
}

func (a *aggStream) Send(r *observerpb.GetFlowsResponse) error {
	if f := r.GetFlow(); f != nil {
		a.set.Add(f)
		return nil
	}
	if r.GetLostEvents() != nil {
		return a.ServerStreamingServer.Send(r)
	}
	return nil
}

// getAggregate answers GetFlows with the edges of the range (package
// aggregate): the same flows, filters, history and ring as without it.
func (s *observerServer) getAggregate(req *observerpb.GetFlowsRequest, stream grpc.ServerStreamingServer[observerpb.GetFlowsResponse]) error {
	if req.GetFollow() {
		return status.Error(codes.InvalidArgument, "aggregates need a finite range: not with follow")
	}
	if req.GetNumber() > 0 {
		return status.Error(codes.InvalidArgument, "aggregates cover a time range (since/until), not a number of flows")
	}
	req = proto.Clone(req).(*observerpb.GetFlowsRequest)
	req.FieldMask = nil // the edges need their fields
	a := &aggStream{ServerStreamingServer: stream, set: aggregate.NewSet()}
	if err := s.GetFlows(req, a); err != nil {
		return err
	}
	for _, e := range a.set.Edges() {
		if err := stream.Send(&observerpb.GetFlowsResponse{
			ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: e.Flow(s.o.cfg.NodeName)},
			NodeName:      s.o.cfg.NodeName,
			Time:          timestamppb.New(e.Last),
		}); err != nil {
			return err
		}
	}
	return nil
}
