package server

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/loupe-project/loupe/api/secevents/v1"
)

// LostAgentBuffer is the LostEvents source for a reader that fell behind
// the agent's buffer.
const LostAgentBuffer = "agent_buffer"

// Service is one agent's SecurityEvents service.
type Service struct {
	pb.UnimplementedSecurityEventsServer
	store    *Store
	nodeName string
}

// NewService serves the events of store.
func NewService(store *Store, nodeName string) *Service {
	return &Service{store: store, nodeName: nodeName}
}

// Register adds the service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) { pb.RegisterSecurityEventsServer(r, s) }

// GetEvents sends what the store holds that passes the filters, then
// follows if asked.
func (s *Service) GetEvents(req *pb.GetEventsRequest, stream grpc.ServerStreamingServer[pb.GetEventsResponse]) error {
	f, err := NewFilter(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	ctx := stream.Context()
	kept, next, _, wait := s.store.Read(0)
	var pass []*pb.GetEventsResponse
	for _, r := range kept {
		if f.Match(r) {
			pass = append(pass, r)
		}
	}
	for _, r := range Last(pass, req.GetNumber()) {
		if err := stream.Send(r); err != nil {
			return err
		}
	}
	if !req.GetFollow() {
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wait:
		}
		var rs []*pb.GetEventsResponse
		var missed uint64
		rs, next, missed, wait = s.store.Read(next)
		if missed > 0 {
			lost := &pb.GetEventsResponse{NodeName: s.nodeName, TimeUnixNano: time.Now().UnixNano(),
				ResponseTypes: &pb.GetEventsResponse_LostEvents{LostEvents: &pb.LostEvents{Source: LostAgentBuffer, Count: missed}}}
			if err := stream.Send(lost); err != nil {
				return err
			}
		}
		for _, r := range rs {
			if !f.Match(r) {
				continue
			}
			if err := stream.Send(r); err != nil {
				return err
			}
		}
	}
}
