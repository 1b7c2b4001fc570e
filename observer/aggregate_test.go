package observer

import (
	"context"
	"testing"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
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

// Connection totals (extensions.connection) add bytes and packets to the
// edge from the client to its server port: growth between reports, so two
// reports of one connection count its final totals once, and the server's
// FIN (a reply) lands on the same edge.
func TestGetFlowsAggregateBytes(t *testing.T) {
	o := newHistoryObserver(t, 15, history.Options{Dir: t.TempDir()})
	c := observerpb.NewObserverClient(serve(t, o))
	first := connEvent(contract.DirectionEgress, false, 1001, 1000)
	first.TimestampNS, first.PacketsFwd, first.BytesFwd, first.PacketsRev, first.BytesRev = 1000e9, 10, 100_000, 5, 330
	last := connEvent(contract.DirectionIngress, true, 1000, 1001) // the server's FIN at the client's veth
	last.TimestampNS = 1001e9
	o.HandleEvent(datapath.MustEncodeEvent(first))
	o.HandleEvent(datapath.MustEncodeEvent(last))
	waitPersisted(t, o)
	s, err := c.GetFlows(aggregate.Ask(context.Background()), &observerpb.GetFlowsRequest{Since: flowTime(o, -1), Until: flowTime(o, 2)})
	if err != nil {
		t.Fatal(err)
	}
	var withBytes []*aggregate.Edge
	for {
		r, err := s.Recv()
		if err != nil {
			break
		}
		e, ok := aggregate.Of(r.GetFlow())
		if !ok {
			t.Fatalf("not an aggregate: %v", r)
		}
		if e.BytesSent+e.BytesReceived > 0 {
			withBytes = append(withBytes, e)
		}
	}
	if len(withBytes) != 1 {
		t.Fatalf("%d edges with bytes, want 1: %+v", len(withBytes), withBytes)
	}
	e := withBytes[0]
	if e.Source != "x/client" || e.Destination != "x/web" || e.Port != 80 {
		t.Errorf("bytes on edge %+v, want x/client -> x/web:80", e.Key)
	}
	if e.BytesSent != 1_000_000 || e.BytesReceived != 2_640 || e.PktSent != 70 || e.PktReceived != 40 || e.Conns != 1 {
		t.Errorf("edge counts sent %d/%d pkts, received %d/%d, %d connections; want 1000000/70, 2640/40, 1",
			e.BytesSent, e.PktSent, e.BytesReceived, e.PktReceived, e.Conns)
	}
	// What the relay does with it: merged from two nodes, it doubles.
	set := aggregate.NewSet()
	f := e.Flow("n")
	set.Add(f)
	set.Add(f)
	if m := set.Edges()[0]; m.BytesSent != 2_000_000 || m.Conns != 2 {
		t.Errorf("merged: %+v", m)
	}
}
