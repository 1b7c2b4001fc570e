package relay

import (
	"context"
	"slices"
	"sync"

	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"

	pb "github.com/loupe-project/loupe/api/resources/v1"
	"github.com/loupe-project/loupe/resources"
)

// podResources merges the agents' Resources services.
type podResources struct {
	pb.UnimplementedResourcesServer
	s *Server
}

func (s *Server) registerResources(r grpc.ServiceRegistrar) {
	pb.RegisterResourcesServer(r, &podResources{s: s})
}

// GetResources asks every connected agent and returns all their pods.
// Each pod is reported by its own node's agent only, so nothing is
// counted twice; an agent that is not connected or does not answer in
// time is named in unavailable_nodes, as Hubble names such nodes in a
// flow query's node status.
func (pr *podResources) GetResources(ctx context.Context, req *pb.GetResourcesRequest) (*pb.GetResourcesResponse, error) {
	s := pr.s
	peers := s.pool.WaitSettled(ctx, s.cfg.PeerDialTimeout)
	var mu sync.Mutex
	out := &pb.GetResourcesResponse{}
	unavailable := func(name string) {
		mu.Lock()
		out.UnavailableNodes = append(out.UnavailableNodes, name)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.State != relaypb.NodeState_NODE_CONNECTED || p.conn == nil {
			unavailable(p.Name)
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.PeerIdleTimeout)
			defer cancel()
			r, err := pb.NewResourcesClient(p.conn).GetResources(cctx, req)
			if err != nil {
				unavailable(p.Name)
				return
			}
			mu.Lock()
			out.Pods = append(out.Pods, resources.Filter(r.GetPods(), req)...)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(out.UnavailableNodes)
	return out, nil
}
