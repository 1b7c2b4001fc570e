package relay

import (
	"context"
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
// counted twice; an agent that does not answer in time is left out.
func (pr *podResources) GetResources(ctx context.Context, req *pb.GetResourcesRequest) (*pb.GetResourcesResponse, error) {
	s := pr.s
	peers := s.pool.WaitSettled(ctx, s.cfg.PeerDialTimeout)
	var mu sync.Mutex
	out := &pb.GetResourcesResponse{}
	var wg sync.WaitGroup
	for _, p := range peers {
		if p.State != relaypb.NodeState_NODE_CONNECTED || p.conn == nil {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, s.cfg.PeerIdleTimeout)
			defer cancel()
			r, err := pb.NewResourcesClient(p.conn).GetResources(cctx, req)
			if err != nil {
				return
			}
			mu.Lock()
			out.Pods = append(out.Pods, resources.Filter(r.GetPods(), req)...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return out, nil
}
