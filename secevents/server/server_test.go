package server

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/loupe-project/loupe/api/secevents/v1"
)

func ev(t int64, ns, pod, rule, prio string) *pb.GetEventsResponse {
	return &pb.GetEventsResponse{TimeUnixNano: t, ResponseTypes: &pb.GetEventsResponse_Event{Event: &pb.SecurityEvent{
		TimeUnixNano: t, Namespace: ns, Pod: pod, Rule: rule, Priority: prio}}}
}

func TestStoreLostExactly(t *testing.T) {
	s := NewStore(4)
	for i := range 10 {
		s.Add(ev(int64(i), "x", "a", "r", "Notice"))
	}
	out, next, missed, _ := s.Read(3)
	if len(out) != 4 || next != 10 || missed != 3 || out[0].GetTimeUnixNano() != 6 {
		t.Fatalf("read: %d entries, next %d, missed %d", len(out), next, missed)
	}
}

func TestFilter(t *testing.T) {
	e := ev(100, "x", "a", "Shell in container", "Notice")
	for _, c := range []struct {
		req  *pb.GetEventsRequest
		want bool
	}{
		{&pb.GetEventsRequest{}, true},
		{&pb.GetEventsRequest{Pod: []string{"x/a"}}, true},
		{&pb.GetEventsRequest{Pod: []string{"a"}}, true},
		{&pb.GetEventsRequest{Pod: []string{"y/a"}}, false},
		{&pb.GetEventsRequest{Namespace: []string{"y", "x"}}, true},
		{&pb.GetEventsRequest{Rule: []string{"Read sensitive file"}}, false},
		{&pb.GetEventsRequest{MinPriority: "warning"}, false},
		{&pb.GetEventsRequest{MinPriority: "notice"}, true},
		{&pb.GetEventsRequest{MinPriority: "debug"}, true},
		{&pb.GetEventsRequest{SinceUnixNano: 101}, false},
	} {
		f, err := NewFilter(c.req)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Match(e); got != c.want {
			t.Errorf("%v: %v, want %v", c.req, got, c.want)
		}
	}
	if _, err := NewFilter(&pb.GetEventsRequest{MinPriority: "loud"}); err == nil {
		t.Error("bad priority accepted")
	}
}

// Over gRPC: the kept events, the last N, then follow with new ones; a
// follower that falls behind gets the exact count of what it missed.
func TestServiceGetEvents(t *testing.T) {
	store := NewStore(8)
	for i := range 5 {
		store.Add(ev(int64(i), "x", "a", "r", "Notice"))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	NewService(store, "n1").Register(gs)
	go gs.Serve(l)
	defer gs.Stop()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewSecurityEventsClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := c.GetEvents(ctx, &pb.GetEventsRequest{Number: 2})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for {
		r, err := st.Recv()
		if err != nil {
			break
		}
		got = append(got, r.GetTimeUnixNano())
	}
	if len(got) != 2 || got[0] != 3 || got[1] != 4 {
		t.Fatalf("last 2: %v", got)
	}
	fst, err := c.GetEvents(ctx, &pb.GetEventsRequest{Number: 1, Follow: true, Rule: []string{"r"}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := fst.Recv(); err != nil || r.GetTimeUnixNano() != 4 {
		t.Fatalf("follow history: %v %v", r, err)
	}
	store.Add(ev(5, "x", "a", "other", "Notice")) // filtered out
	store.Add(ev(6, "x", "a", "r", "Notice"))
	if r, err := fst.Recv(); err != nil || r.GetTimeUnixNano() != 6 {
		t.Fatalf("follow: %v %v", r, err)
	}
}
