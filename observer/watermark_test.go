package observer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/metadata"
)

// A follower gets watermarks (responses without a type) that follow the
// datapath's caught-up instant, never one that a later flow is older than,
// and none while the instant is unknown; a plain request gets none.
func TestGetFlowsFollowWatermarks(t *testing.T) {
	var caught atomic.Int64 // CLOCK_BOOTTIME ns, as the datapath reports it
	o, err := New(Config{NodeName: "node-1", Metadata: metadata.Static{Snap: testSnapshot(t)}, BufferSize: 63,
		LinkName:       func(uint32) string { return "lxc" },
		EventsCaughtUp: caught.Load})
	if err != nil {
		t.Fatal(err)
	}
	c := observerpb.NewObserverClient(serve(t, o))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	event := func(tsNS int64, i int) {
		o.HandleEvent(rawEvent(evSpec{
			ts: uint64(tsNS), typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, verdict: contract.VerdictForwarded, proto: 6, tcpFlags: 0x02, flags: 2,
			epID: 11, srcID: 1001, dstID: 1000, src: "10.0.1.11", dst: "10.0.1.10",
			sport: uint16(30000 + i), dport: 80, dir: contract.DirectionEgress,
		}))
	}
	var mark, newest int64 // the last watermark; the newest flow time
	flows := 0
	// next reads until a watermark at least want arrives, checking each
	// response against the promises made before it.
	next := func(want int64) {
		t.Helper()
		for {
			r, err := s.Recv()
			if err != nil {
				t.Fatal(err)
			}
			ts := r.GetTime().AsTime().UnixNano()
			if r.GetResponseTypes() != nil {
				if f := r.GetFlow(); f != nil {
					if ts < mark {
						t.Fatalf("flow at %d after watermark %d", ts, mark)
					}
					flows++
					newest = max(newest, ts)
				}
				continue
			}
			if r.GetNodeName() != "node-1" || ts <= mark {
				t.Fatalf("watermark %v after %d", r, mark)
			}
			mark = ts
			if ts >= want {
				return
			}
		}
	}
	slack := int64(watermarkSlack)
	base := int64(500e9)
	caught.Store(base)
	next(o.dec.bootOffset + base - slack)
	for round := range 5 {
		// Flows stamped before the new caught-up instant reach the ring
		// first, then the datapath reports that instant.
		t0 := base + int64(round+1)*int64(time.Second)
		for i := range 3 {
			event(t0+int64(i)*int64(time.Millisecond), round*3+i)
		}
		caught.Store(t0 + int64(10*time.Millisecond))
		next(o.dec.bootOffset + t0 + int64(10*time.Millisecond) - slack)
	}
	if flows != 15 || newest >= mark {
		t.Fatalf("%d flows (want 15), newest %d, last watermark %d", flows, newest, mark)
	}

	// A plain request is a snapshot: no watermarks.
	all, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		r, err := all.Recv()
		if err != nil {
			break
		}
		if r.GetResponseTypes() == nil {
			t.Fatalf("watermark in a non-follow stream: %v", r)
		}
		n++
	}
	if n != 15 {
		t.Fatalf("non-follow: %d flows, want 15", n)
	}
}

// While the caught-up instant is unknown (0) no watermark is sent.
func TestWatermarkUnknown(t *testing.T) {
	o, err := New(Config{NodeName: "n", EventsCaughtUp: func() int64 { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	var w watermarks
	if r := w.due(o, 0, time.Now()); r != nil {
		t.Fatalf("watermark %v with an unknown caught-up instant", r)
	}
	o.cfg.EventsCaughtUp = func() int64 { return 1e9 }
	w.next = time.Time{}
	if r := w.due(o, 0, time.Now()); r == nil || r.GetTime().AsTime().UnixNano() != o.dec.bootOffset+1e9-int64(watermarkSlack) {
		t.Fatalf("watermark %v", r)
	}
	// Entries the follower has not read yet: no promise about them.
	o.HandleEvent(rawEvent(evSpec{ts: 2e9, typ: contract.MessageTypeTrace, obs: contract.TraceFromLxc, proto: 6, src: "10.0.1.11", dst: "10.0.1.10"}))
	o.cfg.EventsCaughtUp = func() int64 { return 3e9 }
	w.next = time.Time{}
	if r := w.due(o, 0, time.Now()); r != nil {
		t.Fatalf("watermark %v before the follower read the ring", r)
	}
}
