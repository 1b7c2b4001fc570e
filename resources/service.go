package resources

import (
	"context"
	"slices"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/loupe-project/loupe/api/resources/v1"
)

// Source reads every pod's counters now.
type Source func(ctx context.Context) ([]*pb.PodResources, error)

// Service is one agent's Resources service.
type Service struct {
	pb.UnimplementedResourcesServer
	src Source
}

// NewService serves what src reads, on each request.
func NewService(src Source) *Service { return &Service{src: src} }

// Register adds the service to a gRPC server.
func (s *Service) Register(r grpc.ServiceRegistrar) { pb.RegisterResourcesServer(r, s) }

// GetResources reads the counters and sends those that pass the filters.
func (s *Service) GetResources(ctx context.Context, req *pb.GetResourcesRequest) (*pb.GetResourcesResponse, error) {
	all, err := s.src(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	return &pb.GetResourcesResponse{Pods: Filter(all, req)}, nil
}

// Filter keeps the pods that pass req's filters: within a field values
// OR, across fields they AND. A node's own row (no pod) passes only when
// there is no filter.
func Filter(all []*pb.PodResources, req *pb.GetResourcesRequest) []*pb.PodResources {
	ns, pods := req.GetNamespace(), req.GetPod()
	if len(ns) == 0 && len(pods) == 0 {
		return all
	}
	var out []*pb.PodResources
	for _, r := range all {
		if r.GetPod() == "" {
			continue
		}
		if len(ns) > 0 && !slices.Contains(ns, r.GetNamespace()) {
			continue
		}
		if len(pods) > 0 && !slices.ContainsFunc(pods, func(p string) bool {
			if n, name, ok := strings.Cut(p, "/"); ok {
				return n == r.GetNamespace() && name == r.GetPod()
			}
			return p == r.GetPod()
		}) {
			continue
		}
		out = append(out, r)
	}
	return out
}
