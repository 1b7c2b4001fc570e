package observer

import (
	"context"
	"testing"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loupe-project/loupe/observer/aggregate"
	"github.com/loupe-project/loupe/observer/history"
)

// GetFlows with the aggregate header returns one flow per edge with its
// counts, over the history and the ring alike.
func TestGetFlowsAggregate(t *testing.T) {
	o := newHistoryObserver(t, 15, history.Options{Dir: t.TempDir()})
	c := observerpb.NewObserverClient(serve(t, o))
	fillPersisted(t, o, 0, 300) // ports 80, 81, 82 in turn; most only on disk
	ctx := aggregate.Ask(context.Background())
	s, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Since: flowTime(o, 0), Until: flowTime(o, 149)})
	if err != nil {
		t.Fatal(err)
	}
	total := map[uint32]uint64{}
	for {
		r, err := s.Recv()
		if err != nil {
			break
		}
		f := r.GetFlow()
		e, ok := aggregate.Of(f)
		if !ok {
			t.Fatalf("not an aggregate: %v", f)
		}
		if e.Source != "x/client" && e.Source != "x/b" || e.Destination != "x/web" || e.Protocol != "TCP" {
			t.Fatalf("edge %+v", e.Key)
		}
		total[e.Port] += e.Flows
	}
	if total[80] != 50 || total[81] != 50 || total[82] != 50 || len(total) != 3 {
		t.Fatalf("edges %v, want 50 flows on each of 80, 81, 82", total)
	}
	for _, req := range []*observerpb.GetFlowsRequest{{Follow: true}, {Number: 10}} {
		s, err := c.GetFlows(ctx, req)
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%v: want InvalidArgument, got %v", req, err)
		}
	}
}
